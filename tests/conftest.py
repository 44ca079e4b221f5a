"""Shared pytest set-up."""

import os

import torch

# Small tensors everywhere: one intra-op thread is faster and steadier than several (the
# Makefile sets OMP_NUM_THREADS=1 for the same reason; this covers a bare `pytest` run).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)
