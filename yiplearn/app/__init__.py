"""The click-and-learn web app (DESIGN.md 1.4): a person clicks in a browser and the model adapts live.

``engine`` (every model call), ``images`` (folder or dataset), ``record`` (the workdir), ``annotator`` (the
session without HTTP, replay), ``server`` (the Starlette app and the page in ``static/``), ``serve`` (the
``annotate`` experiment: ``python -m launch.run --config configs/annotate.py --workdir DIR``).
"""
