"""Shared pytest set-up."""

import os

import torch

# Small tensors everywhere: one intra-op thread is faster and steadier than several (the
# Makefile sets OMP_NUM_THREADS=1 for the same reason; this covers a bare `pytest` run).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

# Hypothesis explores new random cases on every local run; under CI (CI=true, as `make test`
# in CI runs) it replays a fixed sequence so that a pass on main stays a pass. A failure found
# locally is printed with its reproducing example and goes into a fixed test.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
    settings.load_profile("ci")
