"""gcln_fast.jpeg / DiffJPEG against Pillow's libjpeg-turbo, and its gradients."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import gcln_fast
from gcln_fast.data.embedded import render_chunk
from gcln_fast.diffjpeg import DiffJPEG, jpeg, quality_tables, stages

QUALITIES = (25, 50, 75, 95)
PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
MAX_MAE = 1.0  # levels of 255: the accuracy bar against Pillow


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def pillow_jpeg(x: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> torch.Tensor:
    """Pillow's JPEG round trip (libjpeg-turbo encoder and decoder) of [0, 1] images, in [0, 1]."""
    out = []
    for a in to_uint8(x):
        buf = io.BytesIO()
        mode = "L" if a.shape[2] == 1 else "RGB"
        Image.fromarray(a[:, :, 0] if mode == "L" else a, mode).save(
            buf, "JPEG", quality=quality, subsampling=PIL_SUBSAMPLING[subsampling]
        )
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(mode), dtype=np.float32)
        out.append(torch.from_numpy(decoded.reshape(a.shape)).permute(2, 0, 1))
    return torch.stack(out) / 255.0


def pillow_tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG", quality=quality)
    tables = Image.open(io.BytesIO(buf.getvalue())).quantization
    return tuple(torch.tensor(tables[i], dtype=torch.float32).reshape(8, 8) for i in (0, 1))


def smooth_images(n: int, h: int, w: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Random smooth 8-bit images: bicubic upsampling of coarse noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, max(2, h // 6), max(2, w // 6), generator=g)
    x = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x * 255).round() / 255


@pytest.fixture(scope="module")
def image_sets():
    embedded = torch.from_numpy(render_chunk(0, "test", 0, 200)[0]).float() / 255
    return {"embedded": embedded, "smooth": smooth_images(64, 37, 45)}


def mae_levels(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().mean() * 255)


def report(capsys, line: str) -> None:
    with capsys.disabled():
        print("\n" + line, end="")


# --------------------------------------------------------------------------- tables


def test_tables_equal_pillow_for_every_quality():
    for quality in range(1, 101):
        luma, chroma = quality_tables(torch.tensor(float(quality)))
        ref_luma, ref_chroma = pillow_tables(quality)
        assert torch.equal(luma, ref_luma), quality
        assert torch.equal(chroma, ref_chroma), quality


def test_per_sample_tables_and_quality_gradient():
    """(N,) qualities give (N, 1, 8, 8) tables; d table / d quality is the documented surrogate."""
    q = torch.tensor([10.0, 49.0, 50.0, 90.0], requires_grad=True)
    luma, chroma = quality_tables(q)
    assert luma.shape == chroma.shape == (4, 1, 8, 8)
    for i, qi in enumerate(q.tolist()):
        ref_luma, ref_chroma = pillow_tables(int(qi))
        assert torch.equal(luma[i, 0].detach(), ref_luma) and torch.equal(chroma[i, 0].detach(), ref_chroma)
    (luma.sum() + chroma.sum()).backward()
    base = torch.tensor((gcln_fast.diffjpeg.IJG_LUMA, gcln_fast.diffjpeg.IJG_CHROMA)).sum()
    d_scaling = torch.where(q < 50, -5000.0 / q.detach() ** 2, torch.full_like(q, -2.0))
    torch.testing.assert_close(q.grad, base / 100.0 * d_scaling)


# --------------------------------------------------------------------------- accuracy against Pillow


@pytest.mark.parametrize("name", ["embedded", "smooth"])
def test_matches_pillow(name, image_sets, capsys):
    """Mean absolute difference to Pillow's decoded image <= 1 level at every quality, 4:2:0."""
    x = image_sets[name]
    for quality in QUALITIES:
        ref = pillow_jpeg(x, quality)
        mae = mae_levels(jpeg(x, quality), ref)
        rounded = jpeg(x, quality, round_output=True)
        mae_rounded = mae_levels(rounded, ref)
        equal = float((rounded == ref).double().mean() * 100)
        report(
            capsys,
            f"jpeg vs Pillow, {name} {tuple(x.shape)}, Q{quality} 4:2:0: MAE {mae:.3f} levels, "
            f"round_output=True {mae_rounded:.3f} ({equal:.1f}% of values equal)",
        )
        assert mae <= MAX_MAE and mae_rounded <= MAX_MAE, (quality, mae, mae_rounded)


def test_kornia_on_the_same_data(image_sets, capsys):
    """The baseline's accuracy on the same images, for the README table (not asserted)."""
    kornia = pytest.importorskip("kornia")
    for name, x in image_sets.items():
        for quality in QUALITIES:
            y = kornia.enhance.jpeg_codec_differentiable(x, torch.full((x.shape[0],), float(quality)))
            report(
                capsys,
                f"kornia vs Pillow, {name} {tuple(x.shape)}, Q{quality}: MAE {mae_levels(y, pillow_jpeg(x, quality)):.3f} levels",
            )


@pytest.mark.parametrize("subsampling", ["4:2:2", "4:4:4"])
def test_other_subsamplings_match_pillow(subsampling, image_sets, capsys):
    x = image_sets["smooth"]
    for quality in (50, 90):
        mae = mae_levels(
            jpeg(x, quality, subsampling=subsampling, round_output=True), pillow_jpeg(x, quality, subsampling)
        )
        report(capsys, f"jpeg vs Pillow, smooth, Q{quality} {subsampling}, round_output=True: MAE {mae:.3f} levels")
        assert mae <= MAX_MAE, (quality, mae)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (9, 7), (17, 33), (31, 16)])
def test_odd_sizes_match_pillow(size):
    x = smooth_images(6, *size, seed=sum(size))
    for round_output in (False, True):
        y = jpeg(x, 60, round_output=round_output)
        assert y.shape == x.shape
        assert mae_levels(y, pillow_jpeg(x, 60)) <= MAX_MAE, (size, round_output)


def test_grayscale_matches_pillow():
    x = smooth_images(16, 29, 35, seed=3, channels=1)
    for quality in QUALITIES:
        for round_output in (False, True):
            assert mae_levels(jpeg(x, quality, round_output=round_output), pillow_jpeg(x, quality)) <= MAX_MAE


@pytest.mark.parametrize("fused", [True, False])
def test_memory_formats(fused, monkeypatch):
    """Channels-last and strided inputs give the contiguous input's result, on both stage paths."""
    monkeypatch.setattr(stages, "FUSED_CPU", stages.FUSED_CPU and fused)
    x = smooth_images(2, 19, 24, seed=16)
    ref = jpeg(x, 60)
    for variant in (x.to(memory_format=torch.channels_last), torch.stack((x, x), -1)[..., 0]):
        xg = variant.detach().requires_grad_()
        y = jpeg(xg, 60)
        y.sum().backward()
        assert torch.equal(y, ref) and xg.grad.shape == x.shape


def test_empty_batch():
    x = torch.rand(0, 3, 8, 8, requires_grad=True)
    y = jpeg(x, 50)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape


def test_output_range_shape_dtype_and_levels():
    x = smooth_images(3, 19, 21) * 1.4 - 0.2  # out-of-range input is clipped as an 8-bit encoder would
    y = jpeg(x, 30)
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= float(y.min()) and float(y.max()) <= 1
    for channels in (x, x[:, :1]):
        decoded = jpeg(channels, 30, round_output=True)  # 8-bit levels k / 255, as images are read
        assert torch.equal(decoded, (decoded * 255).round() / 255)
    for dtype in (torch.float16, torch.bfloat16):  # computed in float32, returned in the input's dtype
        low = x.to(dtype)
        out = jpeg(low, 30)
        assert out.dtype == dtype
        torch.testing.assert_close(out, jpeg(low.float(), 30).to(dtype), atol=0, rtol=0)


# --------------------------------------------------------------------------- per-sample quality


def test_per_sample_quality_equals_the_loop():
    x = smooth_images(4, 24, 40, seed=5)
    quality = torch.tensor([20.0, 45.0, 75.0, 97.0])
    for kwargs in ({}, {"round_output": True}, {"subsampling": "4:4:4"}):
        batched = jpeg(x, quality, **kwargs)
        looped = torch.cat([jpeg(x[i : i + 1], float(q), **kwargs) for i, q in enumerate(quality.tolist())])
        assert torch.equal(batched, looped), kwargs


# --------------------------------------------------------------------------- gradients

# libjpeg's fixed-point JFIF matrices (jccolor.c, jdcolor.c), written out independently of the package.
RGB_TO_YCC = (
    torch.tensor(((19595, 38470, 7471), (-11059, -21709, 32768), (32768, -27439, -5329)), dtype=torch.float64) / 65536
)
YCC_TO_RGB = torch.tensor(((65536, 0, 91881), (65536, -22554, -46802), (65536, 116130, 0)), dtype=torch.float64) / 65536
FACTORS = {"4:2:0": (2, 2), "4:2:2": (1, 2), "4:4:4": (1, 1)}


def straight_through_codec(x: torch.Tensor, subsampling: str) -> torch.Tensor:
    """The codec with every rounding and clip replaced by the identity: a linear map of x (float64)."""
    v = x.double() * 255
    if v.shape[1] == 1:
        return v / 255
    ycc = torch.einsum("oc,nchw->nohw", RGB_TO_YCC, v)
    h, w = v.shape[-2:]
    fv, fh = FACTORS[subsampling]
    c = F.avg_pool2d(ycc[:, 1:], (fv, fh), ceil_mode=True)
    c = F.interpolate(c, scale_factor=(fv, fh), mode="bilinear", align_corners=False)[..., :h, :w]
    return torch.einsum("oc,nchw->nohw", YCC_TO_RGB, torch.cat((ycc[:, :1], c), 1)) / 255


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4", "gray"])
def test_identity_gradient_is_straight_through(subsampling):
    """surrogate="identity": grad_x is the vector-Jacobian product of the rounding- and clip-free codec."""
    channels = 1 if subsampling == "gray" else 3
    subsampling = "4:2:0" if subsampling == "gray" else subsampling
    x = (smooth_images(2, 13, 21, seed=7, channels=channels) * 1.2 - 0.1).requires_grad_()  # some pixels clip
    grad_y = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    jpeg(x, 40, subsampling=subsampling).backward(grad_y)
    x64 = x.detach().double().requires_grad_()
    straight_through_codec(x64, subsampling).backward(grad_y.double())
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-6)


def test_quality_and_table_gradients():
    """A quality tensor gets the table gradients through the documented table surrogate."""
    x = smooth_images(3, 16, 24, seed=2)
    quality = torch.tensor([30.0, 60.0, 85.0], requires_grad=True)
    grad_y = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    jpeg(x, quality).backward(grad_y)
    luma, chroma = (t.detach().squeeze(1).requires_grad_() for t in quality_tables(quality.detach()))
    jpeg(x, luma_table=luma, chroma_table=chroma).backward(grad_y)
    assert luma.grad.abs().sum() > 0 and chroma.grad.abs().sum() > 0
    q = quality.detach()
    d_scaling = torch.where(q < 50, -5000.0 / q**2, torch.full_like(q, -2.0))
    base_l, base_c = (
        torch.tensor(t, dtype=torch.float32) for t in (gcln_fast.diffjpeg.IJG_LUMA, gcln_fast.diffjpeg.IJG_CHROMA)
    )
    expected = ((luma.grad * base_l).sum((1, 2)) + (chroma.grad * base_c).sum((1, 2))) / 100 * d_scaling
    torch.testing.assert_close(quality.grad, expected)


@pytest.mark.parametrize("surrogate", ["cubic", "sine"])
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4", "gray"])
def test_surrogate_gradient_matches_finite_differences(surrogate, subsampling):
    """soft_forward=True is a smooth function; its float64 gradient equals central differences along random directions."""
    channels = 1 if subsampling == "gray" else 3
    subsampling = "4:2:0" if subsampling == "gray" else subsampling
    g = torch.Generator().manual_seed(11)
    x = smooth_images(2, 9, 13, seed=12, channels=channels).double()
    quality = torch.tensor([35.0, 80.0], dtype=torch.float64)
    weights = torch.randn(x.shape, generator=g, dtype=torch.float64)

    def loss(t):
        y = jpeg(t, quality, subsampling=subsampling, surrogate=surrogate, soft_forward=True, backend="reference")
        return (y * weights).sum()

    xg = x.clone().requires_grad_()
    loss(xg).backward()
    eps = 1e-6  # small enough that no coefficient crosses the cubic surrogate's jumps at half-integers
    for _ in range(3):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        numeric = (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)
        torch.testing.assert_close((xg.grad * v).sum(), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("surrogate", ["identity", "cubic", "sine"])
@pytest.mark.parametrize("soft_forward", [False, True])
def test_fused_backend_matches_the_float64_reference(surrogate, soft_forward):
    """The shipped float32 path (fused CPU op) gives the float64 reference path's output and gradients."""
    x = smooth_images(3, 19, 26, seed=13)
    quality = torch.tensor([20.0, 55.0, 90.0])
    grad_y = torch.randn(x.shape, generator=torch.Generator().manual_seed(14))
    outs, grads = [], []
    for xin, backend in ((x, "auto"), (x.double(), "reference")):
        xin = xin.clone().requires_grad_()
        q = quality.to(xin.dtype).clone().requires_grad_()
        y = jpeg(xin, q, surrogate=surrogate, soft_forward=soft_forward, backend=backend)
        y.backward(grad_y.to(y.dtype))
        outs.append(y.detach().double())
        grads.append((xin.grad.double(), q.grad.double()))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-4, rtol=1e-3)  # float32 slopes s'(u)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-4, rtol=1e-3)


def _stage_results(x, subsampling, size, exact, clip, noise):
    """Encode, decode and both adjoints of the pixel stages, as the current path computes them."""
    xg = x.clone().requires_grad_()
    y, c = stages.Encode.apply(xg, subsampling, exact)
    gy, gc = torch.randn(y.shape, generator=noise), torch.randn(c.shape, generator=noise)
    (grad_x,) = torch.autograd.grad((y, c), xg, (gy, gc))
    # quantized-looking inputs for the decoder, some out of the 8-bit range
    yq = (y.detach() + 4 * torch.randn(y.shape, generator=noise)).requires_grad_()
    cq = (c.detach() + 4 * torch.randn(c.shape, generator=noise)).requires_grad_()
    out = stages.Decode.apply(yq, cq, subsampling, size, exact, clip)
    grads = torch.autograd.grad(out, (yq, cq), torch.randn(out.shape, generator=noise))
    return y.detach(), c.detach(), grad_x, out.detach(), *grads


@pytest.mark.skipif(not stages.FUSED_CPU, reason="the extension has no fused JPEG stages")
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4"])
@pytest.mark.parametrize("size", [(32, 32), (13, 21), (5, 4), (4, 3), (1, 1), (2, 2), (17, 40), (9, 5), (64, 70)])
def test_fused_stages_equal_the_pytorch_stages(subsampling, size, monkeypatch):
    """csrc/cpu/jpeg_cpu.cpp against stages.py's PyTorch glue, forward (bit for bit when exact) and adjoints."""
    x = smooth_images(3, *size, seed=size[0] * 100 + size[1])
    for exact, clip in ((True, True), (True, False), (False, True), (False, False)):
        results = []
        for fused in (True, False):
            monkeypatch.setattr(stages, "FUSED_CPU", fused)
            results.append(_stage_results(x, subsampling, size, exact, clip, torch.Generator().manual_seed(15)))
        names = ("y", "c", "grad_x", "decoded", "grad_y", "grad_c")
        for name, a, b in zip(names, *results, strict=True):
            atol = 0 if exact and name in ("y", "c", "decoded") else 1e-6 * float(b.abs().max()) + 1e-7
            torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


# --------------------------------------------------------------------------- errors


def _bad_calls():
    x = torch.rand(2, 3, 8, 8)
    return [
        ((x.numpy(),), {}, TypeError, "x must be a torch.Tensor"),
        ((torch.rand(3, 8, 8),), {}, ValueError, "x must have shape"),
        ((torch.rand(2, 2, 8, 8),), {}, ValueError, "x must have shape"),
        ((torch.rand(2, 3, 0, 8),), {}, ValueError, "x must have H >= 1"),
        ((x.double(),), {}, TypeError, "x may be float64 only"),
        ((x.int(),), {}, TypeError, "x must be float32"),
        ((x, 0), {}, ValueError, "quality must be in"),
        ((x, 101.0), {}, ValueError, "quality must be in"),
        ((x, float("nan")), {}, ValueError, "quality must be in"),
        ((x, True), {}, TypeError, "quality must be a number"),
        ((x, "75"), {}, TypeError, "quality must be a number"),
        ((x, torch.tensor([50.0, 0.5])), {}, ValueError, "quality must be in"),
        ((x, torch.tensor([50.0, 60.0, 70.0])), {}, ValueError, "quality must be a number, a 0-d tensor or an"),
        ((x,), {"subsampling": "4:1:1"}, ValueError, "subsampling must be one of"),
        ((x,), {"surrogate": "round"}, ValueError, "surrogate must be one of"),
        ((x,), {"soft_forward": 1}, TypeError, "soft_forward must be a bool"),
        ((x,), {"round_output": "yes"}, TypeError, "round_output must be a bool"),
        ((x,), {"surrogate": "cubic", "soft_forward": True, "round_output": True}, ValueError, "round_output"),
        ((x,), {"luma_table": torch.ones(4, 4)}, ValueError, "luma_table must have shape"),
        ((x,), {"chroma_table": torch.ones(3, 8, 8)}, ValueError, "chroma_table must have shape"),
        ((x,), {"luma_table": -torch.ones(8, 8)}, ValueError, "luma_table must be finite and in"),
        ((x,), {"chroma_table": torch.full((8, 8), float("inf"))}, ValueError, "chroma_table must be finite and in"),
        ((x,), {"chroma_table": torch.ones(8, 8, dtype=torch.int64)}, TypeError, "chroma_table must be a floating"),
        ((x,), {"luma_table": [[1.0] * 8] * 8}, TypeError, "luma_table must be a tensor"),
        ((x,), {"backend": "gpu"}, ValueError, "backend"),
    ]


@pytest.mark.parametrize("args, kwargs, error, match", _bad_calls())
def test_bad_input_names_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        jpeg(*args, **kwargs)


def test_layer_bad_arguments():
    with pytest.raises(ValueError, match="quality must be in"):
        DiffJPEG(quality=0)
    with pytest.raises(ValueError, match="subsampling must be one of"):
        DiffJPEG(subsampling="420")
    with pytest.raises(ValueError, match="luma_table must have shape"):
        DiffJPEG(luma_table=torch.ones(3, 3))
    with pytest.raises(ValueError, match="q_min"):
        DiffJPEG(trainable=True, q_min=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        DiffJPEG(backend="gpu")
    layer = DiffJPEG()
    with pytest.raises(ValueError, match="surrogate must be one of"):
        layer.surrogate = "straight"


# --------------------------------------------------------------------------- module and compile


def test_layer_is_a_defence_with_a_switchable_surrogate(tmp_path):
    x = smooth_images(4, 32, 32, seed=8)
    defence = DiffJPEG(quality=75).eval()
    y = defence(x)
    assert torch.equal(y, jpeg(x, 75)) and 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(defence(x, quality=torch.full((4,), 30.0)), jpeg(x, 30))
    defence.surrogate = "sine"
    assert defence.surrogate == "sine" and "surrogate='sine'" in repr(defence)
    torch.save(defence, tmp_path / "jpeg.pt")
    loaded = torch.load(tmp_path / "jpeg.pt", weights_only=False)
    assert loaded.surrogate == "sine" and torch.equal(loaded(x), y)


def test_trainable_tables_learn_and_stay_above_q_min(tmp_path):
    x = smooth_images(4, 24, 24, seed=9)
    layer = DiffJPEG(quality=50, trainable=True)
    ref_luma, ref_chroma = pillow_tables(50)
    assert torch.equal(layer.luma_table.detach(), ref_luma) and torch.equal(layer.chroma_table.detach(), ref_chroma)
    assert torch.equal(layer(x), jpeg(x, 50))
    opt = torch.optim.SGD(layer.parameters(), lr=1e3)
    (layer(x) - x).square().sum().backward()
    assert layer.luma_table.grad.abs().sum() > 0 and layer.chroma_table.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(layer.luma_table.detach(), ref_luma)
    with torch.no_grad():
        layer.luma_table.fill_(-5.0)
    assert torch.equal(layer(x), jpeg(x, luma_table=torch.ones(8, 8), chroma_table=layer.chroma_table.detach()))
    restored = pickle.loads(pickle.dumps(layer))
    assert torch.equal(restored(x), layer(x))


def test_compiles_fullgraph_and_matches_eager():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Sigmoid(), DiffJPEG(quality=60))
    x = smooth_images(2, 20, 28, seed=10)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(x), model(x), atol=2e-6, rtol=0)
    grads = []
    for fn in (model, compiled):
        model.zero_grad()
        fn(x).square().sum().backward()
        grads.append(model[0].weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)
