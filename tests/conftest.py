import os

import pytest
import torch

# Triton kernels run on CPU tensors under the interpreter when there is no GPU;
# it must be switched on before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import helpers  # noqa: E402  (after TRITON_INTERPRET: it imports gcln_fast)


@pytest.fixture(params=helpers.backend_params())
def backend(request) -> helpers.Backend:
    """Every QNT backend known to the suites (reference, cpu, cuda, triton); the ones that cannot
    run here are skipped with the reason. A backend-specific file adds what only it has."""
    return request.param
