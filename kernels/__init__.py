"""Triton kernels of gcln_fast, installed as ``gcln_fast.kernels``."""
