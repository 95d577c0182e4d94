"""Workdir I/O: checkpoints (orbax), the resumable item loop, metric writers, atomic result tables,
plots, progress logs; `files.is_writer()` says which process writes (process 0)."""
