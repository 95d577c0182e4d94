"""Interactive segmentation: simulated user, online update rules (MI, PI, baselines) and the jitted session.

Submodules are imported explicitly (``from yiplearn.interactive import session, updates, user``) so that
importing the package stays cheap.
"""
