"""Shared pytest setup (keep minimal)."""

import os

import torch

# Triton decides when `@triton.jit` decorates a kernel whether it is compiled for a GPU
# or interpreted on the CPU, so this must run before any kernel module is imported.
# `is_available()` does not initialise CUDA.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# keras picks its backend at first import; every test that compares with keras_hub uses torch.
os.environ.setdefault("KERAS_BACKEND", "torch")
