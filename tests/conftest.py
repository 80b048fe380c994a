import os

import torch

# Triton kernels run on CPU tensors under the interpreter when there is no GPU;
# it must be switched on before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
