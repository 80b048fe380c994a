"""Triton kernels of gcln_fast, installed as ``gcln_fast.kernels`` (setup.py maps this folder).

Host code and kernels are apart, as in Liger-Kernel:

- ``qnt_triton``: the host launchers and the ``torch.library`` ops (the backend ``"triton"``);
- ``autotune``: the launch configurations of each kernel form;
- ``forms``: the ``dot`` and ``separable`` kernels;
- ``butterfly``: the generator of the ``butterfly`` kernels (straight-line source);
- ``device``: the ``@triton.jit`` helpers they share (DCT, rounding, surrogates, tiles).

Importing a module here imports Triton.
"""
