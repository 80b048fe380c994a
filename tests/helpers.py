"""The test helpers, one module: the QNT op's (``docs/qnt-op.md``: the backends under test, input
makers, parity checks of a backend against the float64 reference), then the GCLN stand-ins and the
toy data and models of the attack and evaluation tests (sections at the end).

A backend's forward and gradients are compared with ``qnt_reference`` evaluated in float64,
the ground truth. Tolerances come from a float32 error model, not from one loose constant:

* round-off: ``u = Z / q`` carries about ``16 eps (|U|_block / q + |u|)`` (``delta_u``), and the
  transforms about ``16 eps`` of the block's norm;
* a flip: a coefficient within ``delta_u`` of a rounding boundary or of the tie window's edge
  may land on the neighbouring level (the contract allows it; see "Numerical agreement"). For
  random float inputs this is rare and is accepted only there.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gcln_fast
from gcln_fast import ops
from gcln_fast._validate import canonical_q
from gcln_fast.qnt_constants import TIE_HALF_WIDTH
from gcln_fast.reference import dct_matrix, qnt_coefficients, qnt_reference, surrogate_slope

EPS32 = 2.0**-24
# One unit in the last place of the output dtype near 1.0, plus float32 round-off.
ULP = {torch.float32: 2e-6, torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SURROGATES = ["identity", "cubic", "sine"]
Q_FORMS = ["scalar", "tensor0d", "freq", "channel", "sample1", "sample"]


# --------------------------------------------------------------------------- backends


@dataclasses.dataclass(frozen=True)
class Backend:
    """One backend on one device, as the kernel suites see it."""

    name: str
    device: str
    slow: bool = False  # the Triton interpreter: small shapes only

    def put(self, t):
        return t.to(self.device) if isinstance(t, torch.Tensor) else t

    def qnt(self, x, q, **kwargs):
        return gcln_fast.qnt(self.put(x), self.put(q), backend=self.name, **kwargs)

    @property
    def ops(self):
        """(forward op, backward op) with the compiled ops' signatures."""
        return ops._ops(self.name)


def _unavailable_reason(name: str, device: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device"
    if name in gcln_fast.available_backends(device):
        return None
    error = ops.TRITON_ERROR if name == "triton" else ops.EXTENSION_ERROR
    return f"backend {name!r} is not available on {device}" + (f": {error}" if error else "")


def backend_params() -> list:
    """pytest params for every backend this suite knows, the unavailable ones skipped with the reason."""
    interpreter = ops._TRITON_INTERPRETER and not torch.cuda.is_available()
    wanted = [
        Backend("reference", "cpu"),
        Backend("cpu", "cpu"),
        Backend("cuda", "cuda"),
        Backend("triton", "cpu", slow=True) if interpreter else Backend("triton", "cuda"),
    ]
    params = []
    for b in wanted:
        reason = _unavailable_reason(b.name, b.device)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        if b.device == "cuda":
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(b, id=f"{b.name}-{b.device}", marks=marks))
    return params


# --------------------------------------------------------------------------- inputs


def rand(shape, dtype=torch.float32, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def randn(shape, dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def make_q(form, shape, seed=0):
    """q in one of the accepted forms (on the CPU) for an input of ``shape`` (N, C, H, W)."""
    n, c = shape[:2]
    g = torch.Generator().manual_seed(seed)
    if form == "scalar":
        return 10.0
    if form == "tensor0d":
        return torch.tensor(6.5)
    sizes = {"freq": (8, 8), "channel": (c, 8, 8), "sample1": (n, 1, 8, 8), "sample": (n, c, 8, 8)}[form]
    return torch.rand(sizes, generator=g) * 30 + 2


def table64(q, x) -> torch.Tensor:
    """The canonical (Nq, Cq, 8, 8) table of any form of q, in float64 on the CPU."""
    return canonical_q(q if not isinstance(q, torch.Tensor) else q.detach().cpu(), x.cpu(), 255.0, torch.float64)


# --------------------------------------------------------------------------- the float64 ground truth


def reference64(x, q, scale=255.0, **kwargs):
    """The reference in float64 on the CPU, rounded to x's dtype."""
    xc = x.detach().cpu()
    return qnt_reference(xc.double(), table64(q, xc), scale, **kwargs).to(x.dtype)


def reference64_grads(x, gy, q, scale=255.0, surrogate="identity"):
    """(grad_x, grad_q of the canonical table) by autograd through the float64 reference."""
    xd = x.detach().cpu().double().requires_grad_()
    qd = table64(q, x).requires_grad_()
    qnt_reference(xd, qd, scale, surrogate=surrogate).backward(gy.detach().cpu().double())
    return xd.grad, qd.grad


def _blocks(u, mode):
    h, w = u.shape[-2:]
    pad = (0, (-w) % 8, 0, (-h) % 8)
    u = F.pad(u, pad, mode=mode) if any(pad) else u
    n, c, hp, wp = u.shape
    return u.reshape(n, c, hp // 8, 8, wp // 8, 8).transpose(3, 4)


def _error_model(x, q, scale):
    """(u, delta_u, near) per coefficient (N, C, Hb, Wb, 8, 8) in float64: u = Z / q, its float32
    round-off bound, and whether it is within that of a rounding boundary or a tie-window edge."""
    xd = x.detach().cpu().double()
    table = table64(q, x)[:, :, None, None]
    u = qnt_coefficients(xd, scale) / table
    norm = _blocks(xd * scale, "replicate").square().sum((-1, -2), keepdim=True).sqrt()
    delta_u = 16 * EPS32 * (norm / table + u.abs()) + 1e-30
    d = (u - u.floor() - 0.5).abs()
    near = d <= TIE_HALF_WIDTH + delta_u
    return u, delta_u, near


# --------------------------------------------------------------------------- forward parity


def assert_qnt_close(y, x, q, scale=255.0, *, surrogate="identity", soft_forward=False, max_flip_fraction=1e-4):
    """``y`` (a backend's output) equals the float64 reference to float32 round-off, except in
    blocks with a coefficient within round-off of a rounding boundary (a flip), which must be
    rare (at most ``max_flip_fraction`` of all coefficients, and two blocks)."""
    y_ref = reference64(x, q, scale, surrogate=surrogate, soft_forward=soft_forward)
    y = y.detach().cpu()
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype, (y.shape, y.dtype, y_ref.shape, y_ref.dtype)
    yf, rf = y.double(), y_ref.double()
    assert bool((torch.isnan(yf) == torch.isnan(rf)).all()), "NaN positions differ"
    tol = ULP[y.dtype] * (1.0 + rf.abs())
    bad = ((yf - rf).abs() > tol) & ~torch.isnan(rf)
    if not bool(bad.any()):
        return
    flipped = F.max_pool2d(F.pad(bad.double(), (0, (-x.shape[-1]) % 8, 0, (-x.shape[-2]) % 8)), 8) > 0
    allowed = max(2, math.ceil(max_flip_fraction * x.numel()))
    worst = (yf - rf).abs().max()
    assert int(flipped.sum()) <= allowed, f"{int(flipped.sum())} blocks differ (allowed {allowed}); max diff {worst}"
    _, _, near = _error_model(x, q, scale)
    near_block = near.flatten(-2).any(-1)
    assert bool(near_block[flipped].all()), f"blocks differ without a coefficient near a rounding boundary: {worst}"


# --------------------------------------------------------------------------- gradient parity


def _slope_curvature(u, surrogate):
    """|s''(u)|, bounded: the sensitivity of s'(u) to round-off of u."""
    if surrogate == "cubic":
        return 6 * (u - u.round()).abs()
    if surrogate == "sine":
        return 2 * math.pi * torch.sin(2 * math.pi * u).abs()
    return torch.zeros_like(u)


def grad_tolerances(x, gy, q, scale, surrogate):
    """(per-block Frobenius bound of grad_x's error (N, C, Hb, Wb), per-entry bound of grad_q's error)."""
    u, delta_u, near = _error_model(x, q, scale)
    d = dct_matrix(dtype=torch.float64)
    g = d @ _blocks(gy.detach().cpu().double(), "constant") @ d.T
    gnorm = g.square().sum((-1, -2)).sqrt()
    gx_tol = 3 * (_slope_curvature(u, surrogate) * delta_u * g.abs()).square().sum((-1, -2)).sqrt()
    gx_tol = gx_tol + 64 * EPS32 * gnorm
    slope = surrogate_slope(u, surrogate)
    # d/du (s - u s') = -u s''; a flip moves s by up to one level.
    term = g.abs() * (u.abs() * _slope_curvature(u, surrogate) * delta_u + 16 * EPS32 * (1 + (u * slope).abs()))
    term = term + g.abs() * near * (0.0 if surrogate == "sine" else 1.0)
    table = table64(q, x)
    gq_tol = term.sum((2, 3)).sum_to_size(table.shape) / scale
    return gx_tol, gq_tol + 1e-7 * (1 + gq_tol.abs().max())


def assert_grads_close(gx, gq, x, gy, q, scale=255.0, surrogate="identity"):
    """A backend's (grad_x, grad_q of the canonical table) against the float64 reference's."""
    rx, rq = reference64_grads(x, gy, q, scale, surrogate)
    gx_tol, gq_tol = grad_tolerances(x, gy, q, scale, surrogate)
    if gx is not None:
        gx = gx.detach().cpu()
        assert gx.shape == x.shape and gx.dtype == x.dtype, (gx.shape, gx.dtype)
        err = _blocks((gx.double() - rx).abs(), "constant").square().sum((-1, -2)).sqrt()
        rounding = ULP[gx.dtype] * _blocks(rx.abs(), "constant").amax((-1, -2)) * 8
        ok = err <= gx_tol + rounding
        assert bool(ok.all()), f"grad_x: {int((~ok).sum())}/{ok.numel()} blocks off; worst err {err.max():.3g}"
    if gq is not None:
        gq = gq.detach().cpu().double().reshape(rq.shape)
        err = (gq - rq).abs()
        ok = err <= gq_tol
        worst = int((err - gq_tol).argmax())
        assert bool(ok.all()), (
            f"grad_q: {int((~ok).sum())}/{ok.numel()} entries off; worst flat index {worst}: got "
            f"{gq.flatten()[worst]:.7g}, want {rq.flatten()[worst]:.7g}, tolerance {gq_tol.flatten()[worst]:.3g}"
        )


def backend_grads(backend: Backend, x, gy, q, scale=255.0, surrogate="identity", need_x=True, need_q=True):
    """(grad_x, grad_q of the canonical table) of ``backend`` through the public API."""
    xb = backend.put(x).detach().requires_grad_(need_x)
    table = canonical_q(backend.put(q), xb, scale).detach().requires_grad_(need_q)
    y = gcln_fast.qnt(xb, table, scale=scale, backend=backend.name, surrogate=surrogate)
    y.backward(backend.put(gy))
    return xb.grad, table.grad


# --------------------------------------------------------------------------- torch.compile


def check_compile_fullgraph(device: str, backend: str, trainable: bool, surrogate: str = "identity") -> None:
    """torch.compile(fullgraph=True) of a model using the layer matches eager, and so do the gradients."""
    torch._dynamo.reset()  # each case compiles nn.Sequential.forward anew: no recompile limit across cases
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 3, 3, padding=1),
        torch.nn.Sigmoid(),
        gcln_fast.QuantizedDCT(10.0, per_frequency=True, trainable=trainable, backend=backend, surrogate=surrogate),
        torch.nn.Conv2d(3, 2, 3, padding=1),
    ).to(device)
    x = rand((2, 3, 20, 20)).to(device)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)
    params = [model[0].weight] + ([model[2].q] if trainable else [])
    grads = []
    for fn in (model, compiled):
        for p in params:
            p.grad = None
        fn(x).square().sum().backward()
        grads.append([p.grad.clone() for p in params])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


# --------------------------------------------------------------------------- GCLN stand-ins
# Small stand-ins for the GCLN tests: a tiny classifier, L-inf attacks and a toy dataset.
#
# They let tests of ``gcln_fast.gcln`` run without ``gcln_fast.models`` /
# ``gcln_fast.attacks`` / ``gcln_fast.data`` and in seconds on two cores.


class TinyClassifier(nn.Module):
    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        h = F.relu(self.c1(x - 0.5))
        h = F.relu(self.c2(h))
        return self.fc(h.mean(dim=(2, 3)))


def toy_data(n: int = 256, num_classes: int = 4, seed: int = 0, contrast: float = 0.3):
    """Images whose class is the brightest colour channel plus a pattern: learnable in a few steps.

    ``contrast``: how much brighter the class channel is; small values (0.05) give a classifier
    that an 8/255 attack fools."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = 0.3 + 0.2 * torch.rand(n, 3, 32, 32, generator=g)
    for i in range(n):
        c = int(y[i]) % 3
        x[i, c] += contrast
        if int(y[i]) == 3:
            x[i, :, ::4, :] = 0.9
    return x.clamp(0, 1), y


def trained_classifier(x, y, steps: int = 60, seed: int = 0) -> TinyClassifier:
    torch.manual_seed(seed)
    m = TinyClassifier(int(y.max()) + 1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,))
        loss = F.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def fgsm(model, x, y, eps=8 / 255, **_):
    x = x.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(loss, x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def pgd(model, x, y, eps=8 / 255, step=2 / 255, steps=3, **_):
    x0 = x.detach()
    xa = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        xa = torch.min(torch.max(xa.detach() + step * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return xa.detach()


ATTACKS = {"fgsm": fgsm, "pgd": pgd}
MIX = ({"attack": "pgd", "eps": 8 / 255, "step": 2 / 255, "steps": 3}, {"attack": "fgsm", "eps": 8 / 255})


# --------------------------------------------------------------------------- attack and evaluation toys
# Tiny synthetic data and models for the attack/evaluation tests (fixed seeds, seconds on 2 CPU cores).
#
# Images are 3x32x32 in [0, 1] on the 8-bit grid: a smooth class template (random 4x4 pattern upsampled)
# over a smooth random background plus pixel noise. A small CNN learns it to ~100% in a few seconds and
# is easy to break at eps = 8/255, while random noise of the same size barely matters.


NUM_CLASSES = 10


def _smooth(g, n, size=4, scale=1.0):
    z = torch.randn(n, 3, size, size, generator=g)
    return F.interpolate(z, size=32, mode="bilinear", align_corners=False) * scale


def make_data(n, *, seed=0, amplitude=0.1, noise=0.02):
    g = torch.Generator().manual_seed(1234)  # templates are shared across splits
    templates = _smooth(g, NUM_CLASSES)
    templates = templates / templates.flatten(1).abs().amax(1)[:, None, None, None]
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    background = _smooth(g, n, size=2, scale=0.03)
    x = 0.5 + amplitude * templates[y] + background + noise * torch.randn(n, 3, 32, 32, generator=g)
    x = (x.clamp(0, 1) * 255).round() / 255
    return x, y


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, NUM_CLASSES),
    )


def train(model, x, y, *, epochs=3, batch=32, lr=3e-3, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@functools.cache
def trained(seed=0, n_train=600, epochs=3, n_test=128):
    """(model, x_test, y_test): a small CNN trained on its own draw of the data (eval mode, ~95% test
    accuracy) and ``n_test`` held-out images shared by every seed. seed 1 serves as the substitute."""
    torch.manual_seed(seed)
    x, y = make_data(n_train, seed=100 + seed)
    model = train(small_cnn(seed), x, y, epochs=epochs, seed=seed)
    xt, yt = make_data(n_test, seed=999)
    return model, xt, yt


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# --------------------------------------------------------------------------- crafted defences


class _IdentityWithBackward(torch.autograd.Function):
    """Forward is the identity; the backward is ``backward(grad)``: every crafted gradient below."""

    @staticmethod
    def forward(ctx, x, backward):
        ctx.backward_fn = backward
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return ctx.backward_fn(g), None


class ZeroGrad(nn.Module):
    """Forward is the identity, backward returns zeros: the textbook masked gradient."""

    def forward(self, x):
        return _IdentityWithBackward.apply(x, torch.zeros_like)


class Collapsed(nn.Module):
    """A collapsed cleaning network: every image becomes the same grey image (the model ignores its input)."""

    def forward(self, x):
        return torch.full_like(x, 0.5)


class FakeSurrogateLayer(nn.Module):
    """Stands in for a QNT layer with a settable backward ``surrogate``: the forward is the identity and
    the backward depends on the surrogate (``seen`` records the surrogate of every backward pass)."""

    def __init__(self, surrogate="sine"):
        super().__init__()
        self.surrogate = surrogate
        self.seen = []

    def forward(self, x):
        return _IdentityWithBackward.apply(x, self._backward)

    def _backward(self, g):
        self.seen.append(self.surrogate)
        # "identity" (BPDA) sees no signal here, "cubic" the true gradient, "sine" a reversed one
        return {"identity": torch.zeros_like(g), "cubic": g, "sine": -g}[self.surrogate]


class FakeClamp(nn.Module):
    """Stands in for the generator's output clamp: ``straight_through_clamp`` as on ``gcln.Generator``."""

    def __init__(self):
        super().__init__()
        self.straight_through_clamp = False
        self.seen = []

    def forward(self, x):
        self.seen.append(self.straight_through_clamp)
        return x


class LateReversal(nn.Module):
    """Honest gradients for the first ``k`` backward passes of an attack, reversed afterwards (the
    count restarts at every no-grad forward, i.e. every evaluation): long attacks undo themselves."""

    def __init__(self, k=10):
        super().__init__()
        self.k, self.calls = k, 0

    def forward(self, x):
        if not torch.is_grad_enabled():
            self.calls = 0
        return _IdentityWithBackward.apply(x, self._backward)

    def _backward(self, g):
        self.calls += 1
        return g if self.calls <= self.k else -g
