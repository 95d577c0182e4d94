"""Interactive segmentation that learns from clicks (DESIGN.md 1.1).

Modules: ``spec`` (typed hyper-parameters: SessionSpec, Loss), ``user`` (the simulated user),
``step`` (the one click step), ``rules`` (the optax-shaped update rules and METHODS), ``session``
(a whole image as one jitted function; sharded streams), ``tool`` (per-click functions for a person),
``evaluation`` (validation of a fixed model) and ``pretraining`` (the click pre-training step).
Submodules are imported explicitly (``from yiplearn.interactive import rules, session``) so that
importing the package stays cheap.
"""
