"""Workdir I/O: checkpoints (orbax), metric writers, atomic result tables, plots, progress logs."""
