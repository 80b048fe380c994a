"""A procedurally rendered, SVHN-like house-number dataset that needs no download.

Every image is a 32x32 RGB crop centred on one digit (the label, 0-9) drawn with the
font Pillow ships (``ImageFont.load_default``: Aileron, scalable since Pillow 10.1) in
three stroke weights, with a random colour against a random background (two-colour
gradient plus low-frequency texture, sometimes stripes), random scale, aspect,
rotation, shear and sub-pixel position, neighbouring digits of the same house number
partly visible on the left/right (as in SVHN's cropped-digit format), a random blur
level and Gaussian sensor noise. Some images are deliberately hard (low contrast,
heavy blur/noise, large scale), so a classifier does not reach 100%.

Determinism: image ``j`` of split ``s`` depends only on ``(seed, s, j)`` and
:data:`VERSION`: generation runs in chunks of :data:`CHUNK` images, chunk ``k`` drawing
from ``numpy.random.SeedSequence([seed, split_id, k])``. So ``size=600`` yields the
first 600 images of ``size=20000``, splits use disjoint seed streams, and the result
does not depend on the number of worker processes. Rendering uses only numpy
element-wise arithmetic and one FreeType rasterisation of 30 glyphs (Pillow's bundled
FreeType), so the bytes are identical across runs and machines with the same
numpy/Pillow versions (a test pins a checksum for the versions it was recorded with).

Generated arrays are cached as ``.npz`` (uint8, NCHW) under the dataset root
(default ``~/.cache/gcln_fast/embedded``); the cache file name holds the version,
split, seed and size, and a larger cached file of the same stream is sliced when one exists.
"""

from __future__ import annotations

import os
import re
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils.io import atomic_write

VERSION = "v3"
CHUNK = 500  # images per seed chunk (a multiple of 10: labels are balanced per chunk)
IMAGE_SIZE = 32
DEFAULT_SIZES = {"train": 20000, "test": 2000, "val": 2000}
SPLIT_IDS = {"train": 0, "test": 1, "val": 2}
DEFAULT_ROOT = Path("~/.cache/gcln_fast/embedded")

# Rendering parameters (tuned so that small_cnn lands around 90-98% test accuracy).
_ATLAS_FONT_SIZE = 32
_ATLAS_CELL = 56  # square atlas cell; glyph ink centred in it
_STROKES = (0, 1, 2)  # font weights: regular, semi-bold, bold
_PARAMS = dict(
    height_px=(15.0, 26.0),  # rendered digit height in output pixels
    aspect=(0.85, 1.2),  # horizontal stretch relative to the font
    rotation_deg=6.0,  # +-, uniform
    shear=0.12,  # +-, uniform (italic-like)
    shift_px=(1.5, 1.5),  # +- centre offset x, y
    gap=(-0.05, 0.5),  # neighbour spacing, in digit widths
    p_left=0.6,  # probability of a neighbouring digit on the left / right
    p_right=0.6,
    contrast=(0.12, 0.7),  # |luminance(fg) - luminance(bg)|
    texture=(0.0, 0.22),  # amplitude of low-frequency background texture
    p_stripes=0.2,
    blur_levels=(0.0, 0.6, 1.0, 1.5, 2.0),  # Gaussian sigma, px
    blur_probs=(0.35, 0.3, 0.17, 0.11, 0.07),
    noise=(0.0, 0.08),  # Gaussian noise sigma
)


@lru_cache(maxsize=1)
def _atlas() -> tuple[np.ndarray, np.ndarray]:
    """Glyph masks ``(len(_STROKES) * 10, C + 2, C + 2)`` float32 in [0, 1] (zero border)
    and the ink half-width/half-height of each glyph ``(len(_STROKES) * 10, 2)``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=_ATLAS_FONT_SIZE)
    if not hasattr(font, "getbbox") or type(font).__name__ != "FreeTypeFont":  # Pillow < 10.1
        raise RuntimeError("the embedded dataset needs Pillow >= 10.1 (scalable default font)")
    c = _ATLAS_CELL
    masks, half = [], []
    for stroke in _STROKES:
        for digit in range(10):
            img = Image.new("L", (c * 2, c * 2), 0)
            ImageDraw.Draw(img).text(
                (c // 2, c // 4), str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255
            )
            a = np.asarray(img, dtype=np.float32) / 255.0
            ys, xs = np.nonzero(a > 0.2)
            cy, cx = (ys.min() + ys.max() + 1) / 2.0, (xs.min() + xs.max() + 1) / 2.0
            y0, x0 = int(round(cy - c / 2)), int(round(cx - c / 2))
            cell = np.zeros((c + 2, c + 2), np.float32)
            cell[1:-1, 1:-1] = a[y0 : y0 + c, x0 : x0 + c]
            masks.append(cell)
            # ink extent of the glyph (stroke included) about the cell centre
            half.append(((xs.max() + 1 - xs.min()) / 2.0, (ys.max() + 1 - ys.min()) / 2.0))
    return np.stack(masks), np.asarray(half, np.float32)


def _bilinear_gather(flat: np.ndarray, glyph: np.ndarray, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Sample atlas glyphs ``glyph`` (B,) at atlas coords ``qx, qy`` (B, H, W); 0 outside."""
    size = flat.shape[-1]
    qx = np.clip(qx, 0.0, size - 1.001)
    qy = np.clip(qy, 0.0, size - 1.001)
    x0 = np.floor(qx)
    y0 = np.floor(qy)
    fx = (qx - x0).astype(np.float32)
    fy = (qy - y0).astype(np.float32)
    base = (glyph.astype(np.int64) * size * size)[:, None, None]
    i00 = base + y0.astype(np.int64) * size + x0.astype(np.int64)
    f = flat.reshape(-1)
    v00, v01 = f[i00], f[i00 + 1]
    v10, v11 = f[i00 + size], f[i00 + size + 1]
    top = v00 + (v01 - v00) * fx
    bot = v10 + (v11 - v10) * fx
    return top + (bot - top) * fy


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix (align_corners=True)."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
    w = pos - i0
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), i0] = 1.0 - w
    m[np.arange(n_out), i0 + 1] = w
    return m.astype(np.float32)


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(2.5 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (B, 3, H, W) float32 with edge replication."""
    if sigma <= 0:
        return img
    k = _gauss_kernel(sigma)
    r = len(k) // 2
    h, w = img.shape[-2:]
    p = np.pad(img, ((0, 0), (0, 0), (0, 0), (r, r)), mode="edge")
    out = sum(k[i] * p[..., i : i + w] for i in range(len(k)))
    p = np.pad(out, ((0, 0), (0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * p[..., i : i + h, :] for i in range(len(k)))


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _digit_masks(rng, labels: np.ndarray) -> np.ndarray:
    """Ink masks ``(B, 1, S, S)`` of each image's digit and its partly visible neighbours: random
    stroke weight, scale, aspect, rotation, shear and position (an inverse affine map per image)."""
    P, B, S = _PARAMS, len(labels), IMAGE_SIZE
    atlas, half = _atlas()
    cell_c = (_ATLAS_CELL + 2) / 2.0
    var = rng.integers(0, len(_STROKES), B)
    glyph = var * 10 + labels
    left_d, right_d = rng.integers(0, 10, B), rng.integers(0, 10, B)
    has_left, has_right = rng.random(B) < P["p_left"], rng.random(B) < P["p_right"]
    height = rng.uniform(*P["height_px"], B)
    scale_y = height / (2.0 * half[glyph, 1])  # output px per atlas px
    scale_x = scale_y * rng.uniform(*P["aspect"], B)
    theta = np.deg2rad(rng.uniform(-P["rotation_deg"], P["rotation_deg"], B))
    shear = rng.uniform(-P["shear"], P["shear"], B)
    cx = S / 2.0 + rng.uniform(-P["shift_px"][0], P["shift_px"][0], B)
    cy = S / 2.0 + rng.uniform(-P["shift_px"][1], P["shift_px"][1], B)
    gap = rng.uniform(*P["gap"], B)
    # forward map atlas->output: p = c + R @ Sh @ diag(sx, sy) @ q ; invert it per image
    cos, sin = np.round(np.cos(theta), 12), np.round(np.sin(theta), 12)
    a11, a12 = cos * scale_x, (cos * shear - sin) * scale_y
    a21, a22 = sin * scale_x, (sin * shear + cos) * scale_y
    det = a11 * a22 - a12 * a21
    i11, i12, i21, i22 = a22 / det, -a12 / det, -a21 / det, a11 / det
    grid = np.arange(S, dtype=np.float64) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    qx = i11[:, None, None] * dx + i12[:, None, None] * dy  # atlas coords about the cell centre
    qy = i21[:, None, None] * dx + i22[:, None, None] * dy
    mask = _bilinear_gather(atlas, glyph, qx + cell_c, qy + cell_c)
    w_c = half[glyph, 0]
    for has, dig, sign in ((has_left, left_d, -1.0), (has_right, right_d, 1.0)):
        g = var * 10 + dig
        off = sign * (w_c + half[g, 0] + gap * 2.0 * half[glyph, 0])
        m = _bilinear_gather(atlas, g, qx - off[:, None, None] + cell_c, qy + cell_c)
        mask = np.maximum(mask, m * has[:, None, None])
    return mask[:, None].astype(np.float32)


def _backgrounds(rng, B: int) -> np.ndarray:
    """``(B, 3, S, S)``: a two-colour gradient, low-frequency texture and, sometimes, stripes."""
    P, S = _PARAMS, IMAGE_SIZE
    grid = np.arange(S, dtype=np.float64) + 0.5
    c1 = rng.random((B, 3)).astype(np.float32)
    c2 = np.clip(c1 + rng.normal(0.0, 0.2, (B, 3)), 0, 1).astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi, B)
    t = (
        np.cos(phi)[:, None, None] * (grid[None, None, :] - S / 2)
        + np.sin(phi)[:, None, None] * (grid[None, :, None] - S / 2)
    ) / S + 0.5
    t = np.clip(t, 0, 1).astype(np.float32)[:, None]
    bg = c1[:, :, None, None] * (1 - t) + c2[:, :, None, None] * t
    m5 = _interp_matrix(S, 5)
    tex = rng.normal(0.0, 1.0, (B, 1, 5, 5)).astype(np.float32)
    tex = np.einsum("ij,bcjk,lk->bcil", m5, tex, m5)
    bg = bg + tex * rng.uniform(*P["texture"], B).astype(np.float32)[:, None, None, None]
    stripes = rng.random(B) < P["p_stripes"]
    period = rng.uniform(3.0, 9.0, B)
    sphi = rng.uniform(0, 2 * np.pi, B)
    u = np.cos(sphi)[:, None, None] * grid[None, None, :] + np.sin(sphi)[:, None, None] * grid[None, :, None]
    stripe = (np.sin(2 * np.pi * u / period[:, None, None]) > 0).astype(np.float32)
    amp = (stripes * rng.uniform(0.05, 0.2, B)).astype(np.float32)
    return np.clip(bg + (stripe * amp[:, None, None])[:, None], 0, 1)


def _paint_digits(rng, bg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Composite a random foreground colour through ``mask``, at a controlled luminance contrast."""
    P, B, S = _PARAMS, len(bg), IMAGE_SIZE
    bg_l = np.einsum("bchw,c->b", bg, _LUMA) / (S * S)
    target = rng.uniform(*P["contrast"], B).astype(np.float32)
    sign = np.where(rng.random(B) < 0.5, -1.0, 1.0).astype(np.float32)
    sign = np.where(bg_l + sign * target > 1.0, -1.0, np.where(bg_l + sign * target < 0.0, 1.0, sign))
    fg = rng.random((B, 3)).astype(np.float32)
    fg = np.clip(fg + (bg_l + sign * target - fg @ _LUMA)[:, None], 0, 1)
    return bg * (1 - mask) + fg[:, :, None, None] * mask


def _camera(rng, img: np.ndarray) -> np.ndarray:
    """Blur (one of a few levels), Gaussian sensor noise and 8-bit quantisation; uint8."""
    P, B = _PARAMS, len(img)
    level = rng.choice(len(P["blur_levels"]), B, p=P["blur_probs"])
    out = np.empty_like(img)
    for li, sigma in enumerate(P["blur_levels"]):
        sel = np.nonzero(level == li)[0]
        if len(sel):
            out[sel] = _blur(img[sel], sigma)
    noise = rng.normal(0.0, 1.0, out.shape).astype(np.float32)
    out = out + noise * rng.uniform(*P["noise"], B).astype(np.float32)[:, None, None, None]
    return np.floor(np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_chunk(seed: int, split: str, chunk: int, n: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Render the first ``n`` (<= CHUNK) images of chunk ``chunk``: ``(uint8 (n,3,32,32), int64 (n,))``.

    A full chunk is always drawn, in a fixed order of random draws (labels, digit geometry,
    background, foreground colour, camera), so that prefixes are stable."""
    if not 0 < n <= CHUNK:
        raise ValueError(f"n must be in 1..{CHUNK}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, SPLIT_IDS[split], chunk])))
    labels = rng.permutation(np.arange(CHUNK) % 10)
    mask = _digit_masks(rng, labels)
    img = _paint_digits(rng, _backgrounds(rng, CHUNK), mask)
    return _camera(rng, img)[:n], labels[:n].astype(np.int64)


def _render_job(job):
    return render_chunk(*job)


def generate(size: int, seed: int = 0, split: str = "train", workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Render ``size`` images of ``split``: ``(uint8 (size,3,32,32), int64 (size,))``."""
    if split not in SPLIT_IDS:
        raise ValueError(f"embedded split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    if size < 0:
        raise ValueError("size must be >= 0")
    jobs = [(seed, split, k, min(CHUNK, size - k * CHUNK)) for k in range((size + CHUNK - 1) // CHUNK)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            parts = pool.map(_render_job, jobs)
    else:
        parts = [_render_job(j) for j in jobs]
    if not parts:
        return np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def cache_path(root, size: int, seed: int, split: str) -> Path:
    return Path(root).expanduser() / f"embedded-{VERSION}-{split}-seed{seed}-n{size}.npz"


def load_or_generate(
    root=None, size: int | None = None, seed: int = 0, split: str = "train", workers: int | None = None
) -> tuple[np.ndarray, np.ndarray, Path]:
    """Cached arrays for ``(size, seed, split)``; slices a larger cached file of the same stream."""
    if split not in SPLIT_IDS:
        raise ValueError(f"embedded split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    size = DEFAULT_SIZES[split] if size is None else int(size)
    root = Path(root if root is not None else DEFAULT_ROOT).expanduser()
    path = cache_path(root, size, seed, split)
    candidates = [path] if path.is_file() else []
    if not candidates and root.is_dir():
        pat = re.compile(rf"embedded-{re.escape(VERSION)}-{re.escape(split)}-seed{seed}-n(\d+)\.npz$")
        bigger = sorted(
            (int(m.group(1)), p) for p in root.iterdir() if (m := pat.match(p.name)) and int(m.group(1)) >= size
        )
        candidates = [p for _, p in bigger]
    for cand in candidates:
        try:
            with np.load(cand) as z:
                x, y = z["images"][:size], z["labels"][:size]
            if x.shape == (size, 3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == np.uint8 and y.shape == (size,):
                return x, y.astype(np.int64), cand
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # corrupt/foreign file: regenerate
            pass
    if workers is None:  # one process renders ~5000 images/s; a pool rarely pays off
        workers = int(os.environ.get("GCLN_EMBEDDED_WORKERS", "1"))
    x, y = generate(size, seed, split, workers=workers)
    # mkstemp makes 0600; the cache is shared
    atomic_write(path, lambda f: np.savez(f, images=x, labels=y), mode=0o644)
    return x, y, path


class InMemoryImages(Dataset):
    """Base of the in-memory datasets: ``images`` uint8 (N, 3, H, W) and ``labels`` int64 (N);
    items are ``(float32 image in [0, 1], int label)``."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]).float().div_(255.0), int(self.labels[i])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images, self.labels


class EmbeddedDigits(InMemoryImages):
    """The rendered house-number dataset; items ``(float32 (3,32,32) in [0,1], int label)``.

    ``images`` (uint8, N x 3 x 32 x 32) and ``labels`` (int64, N) hold the whole split.
    """

    name = "embedded"
    allows_hflip = False
    classes = [str(d) for d in range(10)]

    def __init__(self, root=None, split: str = "train", size: int | None = None, seed: int = 0):
        self.split, self.seed = split, seed
        self.images, self.labels, self.cache_file = load_or_generate(root, size, seed, split)
