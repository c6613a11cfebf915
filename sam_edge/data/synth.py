"""Synthetic data in the SA-1B layout: scenes worth segmenting, written as ``sa_<N>.jpg`` +
``sa_<N>.json`` (COCO RLE masks) plus an ``index.json``, so every training path can be exercised
without the real SA-1B.

A scene has a textured or gradient background (smooth gradients, stripes, checkers, value-noise
textures; sometimes split by a wavy horizon into two annotated "stuff" regions), then 4-12
objects of varied shape (ellipses, rounded/rotated rectangles, polygons, stars, blobs, rings)
with their own colour, gradient, rim shading and pattern. Later objects occlude earlier ones; the
ground-truth masks are the *visible* parts. One or two objects are nested: a ``whole`` (body)
containing a ``part`` (panel) containing one or two ``subpart`` (buttons), each annotated as its
own mask (the whole includes its panel and buttons, the panel its buttons), so one point on a
button is genuinely ambiguous, the case SAM's three-mask output exists for. Colours are chosen
with a minimum contrast to what lies underneath (background or container); per-object texture
and pixel noise keep a flat-colour shortcut from working.

Determinism: each image is drawn from ``numpy.random.SeedSequence([seed, N])``, so image ``N``
is the same whatever ``num_images`` or ``workers`` are; JPEG settings are fixed and nothing
records a time, so the same seed gives byte-identical files. Files are written atomically and a
rerun skips images whose ``.jpg`` and ``.json`` are already complete (resume).
"""
from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

GENERATOR_VERSION = "1.0"
#: Masks whose visible area is below this fraction of the image are dropped.
MIN_AREA_FRACTION = 0.001
JPEG_QUALITY = 92
LEVELS = ("stuff", "object", "whole", "part", "subpart")

log = logging.getLogger("sam_edge.data.synth")

__all__ = [
    "GENERATOR_VERSION",
    "MIN_AREA_FRACTION",
    "Scene",
    "SceneMask",
    "generate_dataset",
    "generate_image",
    "render_scene",
    "scene_to_sa1b",
]


# --------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------
@dataclass
class SceneMask:
    """One ground-truth mask: the visible pixels of a region (H x W bool)."""

    mask: np.ndarray
    level: str  # one of LEVELS
    shape: str  # "background", "ellipse", "superellipse", "polygon", "star", "blob", "ring"
    parent: int | None = None  # index of the containing mask in Scene.masks (nested levels)


@dataclass
class Scene:
    image: np.ndarray  # H x W x 3 uint8
    masks: list[SceneMask] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Shapes: each gives a normalised radial coordinate ``rho`` (0 at the centre, 1 on the boundary)
# --------------------------------------------------------------------------------------------
@dataclass
class _Shape:
    kind: str
    cx: float
    cy: float
    r: float  # outer radius (pixels)
    angle: float = 0.0
    aspect: float = 1.0  # minor / major (ellipse family)
    power: float = 2.0  # superellipse exponent (2 = ellipse, large = rectangle)
    n: int = 5  # polygon / star vertices
    ratio: float = 1.0  # star inner / outer radius
    harmonics: tuple = ()  # blob: ((k, amplitude, phase), ...)
    hole: float = 0.0  # ring: rho of the hole

    @property
    def extent(self) -> float:
        """Radius of a circle about the centre that contains the shape."""
        if self.kind in ("superellipse",):
            return self.r * math.sqrt(1.0 + self.aspect**2)
        return self.r

    @property
    def inner(self) -> float:
        """Radius of a circle about the centre that the shape contains (for nesting)."""
        if self.kind in ("ellipse", "superellipse", "ring"):
            return self.r * self.aspect * (1.0 if self.kind != "ring" else 0.0)
        if self.kind in ("polygon", "star"):
            c, nvec = self._edge()
            return abs(c) / math.hypot(*nvec)
        if self.kind == "blob":
            total = sum(abs(a) for _, a, _ in self.harmonics)
            return self.r * (1 - total) / (1 + total)
        raise ValueError(self.kind)

    def _edge(self) -> tuple[float, tuple[float, float]]:
        half = math.pi / self.n
        p0 = (self.r, 0.0)
        p1 = (self.r * self.ratio * math.cos(half), self.r * self.ratio * math.sin(half))
        d = (p1[0] - p0[0], p1[1] - p0[1])
        nvec = (d[1], -d[0])
        return nvec[0] * p0[0] + nvec[1] * p0[1], nvec

    def rho(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        dx = xx - np.float32(self.cx)
        dy = yy - np.float32(self.cy)
        if self.kind in ("ellipse", "superellipse", "ring"):
            ca, sa = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
            u = (dx * ca + dy * sa) / np.float32(self.r)
            v = (dy * ca - dx * sa) / np.float32(self.r * self.aspect)
            if self.kind == "superellipse":
                p = np.float32(self.power)
                return (np.abs(u) ** p + np.abs(v) ** p) ** np.float32(1.0 / self.power)
            return np.sqrt(u * u + v * v)
        dist = np.sqrt(dx * dx + dy * dy)
        phi = np.arctan2(dy, dx) - np.float32(self.angle)
        if self.kind in ("polygon", "star"):
            sector = np.float32(2 * math.pi / self.n)
            t = np.mod(phi, sector)
            t = np.minimum(t, sector - t)
            c, (nx, ny) = self._edge()
            boundary = np.float32(c) / (np.float32(nx) * np.cos(t) + np.float32(ny) * np.sin(t))
            return dist / boundary
        if self.kind == "blob":
            total = sum(abs(a) for _, a, _ in self.harmonics)
            wave = np.ones_like(phi)
            for k, a, ph in self.harmonics:
                wave += np.float32(a) * np.cos(np.float32(k) * phi + np.float32(ph))
            return dist / (np.float32(self.r / (1 + total)) * wave)
        raise ValueError(self.kind)

    def mask(self, rho: np.ndarray) -> np.ndarray:
        m = rho <= 1.0
        if self.kind == "ring":
            m &= rho >= self.hole
        return m


def _random_shape(rng: np.random.Generator, kind: str, cx: float, cy: float, r: float) -> _Shape:
    angle = float(rng.uniform(0, 2 * math.pi))
    if kind == "ellipse":
        return _Shape(kind, cx, cy, r, angle, aspect=float(rng.uniform(0.45, 1.0)))
    if kind == "superellipse":  # rounded to sharp rotated rectangles
        return _Shape(kind, cx, cy, r, angle, aspect=float(rng.uniform(0.4, 1.0)),
                      power=float(rng.choice([3.0, 5.0, 10.0, 40.0])))
    if kind == "polygon":
        n = int(rng.integers(3, 9))
        return _Shape(kind, cx, cy, r, angle, n=n, ratio=math.cos(math.pi / n))
    if kind == "star":
        return _Shape(kind, cx, cy, r, angle, n=int(rng.integers(4, 9)), ratio=float(rng.uniform(0.45, 0.7)))
    if kind == "blob":
        ks = rng.choice(np.arange(2, 7), size=int(rng.integers(2, 4)), replace=False)
        harmonics = tuple(
            (int(k), float(rng.uniform(0.04, 0.28) / math.sqrt(k)), float(rng.uniform(0, 2 * math.pi)))
            for k in sorted(ks)
        )
        return _Shape(kind, cx, cy, r, angle, harmonics=harmonics)
    if kind == "ring":
        return _Shape(kind, cx, cy, r, angle, aspect=float(rng.uniform(0.6, 1.0)), hole=float(rng.uniform(0.4, 0.65)))
    raise ValueError(kind)


_OBJECT_KINDS = ("ellipse", "superellipse", "polygon", "star", "blob", "ring")
_OBJECT_P = (0.2, 0.22, 0.16, 0.12, 0.22, 0.08)
_CONTAINER_KINDS = ("ellipse", "superellipse", "polygon", "blob")
_CONTAINER_P = (0.25, 0.4, 0.15, 0.2)


# --------------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------------
def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Smooth noise in [0, 1], H x W float32 (bicubic-upsampled random grids, a few octaves)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = max(2, int(math.ceil(h / cell)) + 1), max(2, int(math.ceil(w / cell)) + 1)
        grid = rng.random((gh, gw), dtype=np.float32)
        out += np.float32(amp) * np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC))
        total += amp
        amp *= 0.5
        cell /= 2.0
        if cell < 2:
            break
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / np.float32(max(hi - lo, 1e-6))


def _pattern(rng: np.random.Generator, kind: str, yy: np.ndarray, xx: np.ndarray, scale: float) -> np.ndarray:
    """A [0, 1] field of the given kind over the window (yy: h x 1, xx: 1 x w), feature size
    proportional to ``scale`` pixels."""
    theta = float(rng.uniform(0, math.pi))
    ct, st = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    u = xx * ct + yy * st
    v = yy * ct - xx * st
    period = np.float32(max(3.0, scale * rng.uniform(0.08, 0.35)))
    phase = np.float32(rng.uniform(0, 2 * math.pi))
    if kind == "stripes":
        s = np.sin(u * np.float32(2 * math.pi) / period + phase)
        if rng.random() < 0.5:  # hard stripes
            return (s > 0).astype(np.float32)
        return np.float32(0.5) + np.float32(0.5) * s
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "dots":
        fu = u / period - np.floor(u / period) - np.float32(0.5)
        fv = v / period - np.floor(v / period) - np.float32(0.5)
        return (fu * fu + fv * fv < np.float32(rng.uniform(0.04, 0.12))).astype(np.float32)
    if kind == "noise":
        h, w = yy.shape[0], xx.shape[1]
        return _value_noise(rng, h, w, cell=max(2.0, float(period) * 1.5), octaves=3)
    if kind == "linear":
        span = np.float32(max(scale, 1.0))
        return np.clip(np.float32(0.5) + u / span - np.float32(u.mean() / span if u.size else 0), 0, 1)
    if kind == "radial":
        h, w = yy.shape[0], xx.shape[1]
        cy = np.float32(yy.min() + rng.uniform(0, 1) * h)
        cx = np.float32(xx.min() + rng.uniform(0, 1) * w)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / np.float32(max(scale, 1.0))
        return np.clip(d, 0, 1)
    raise ValueError(kind)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(15, 240, 3).astype(np.float32)


def _contrasting_colour(rng: np.random.Generator, ref: np.ndarray, min_dist: float = 90.0) -> np.ndarray:
    """A random colour at least ``min_dist`` (RGB Euclidean) from ``ref``, or the farthest of a
    few tries."""
    best, best_d = None, -1.0
    for _ in range(16):
        c = _random_colour(rng)
        d = float(np.linalg.norm(c - ref))
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int) -> np.ndarray:
    """H x W x 3 float32 background: gradient, stripes, checkers or noise between two colours,
    with a low-frequency illumination field."""
    kind = str(rng.choice(["linear", "radial", "stripes", "checker", "noise", "noise"]))
    c1 = _random_colour(rng)
    delta = rng.normal(0, 1, 3).astype(np.float32)
    delta *= np.float32(rng.uniform(35, 100)) / np.float32(np.linalg.norm(delta) + 1e-6)
    c2 = np.clip(c1 + delta, 0, 255)
    p = _pattern(rng, kind, yy, xx, scale=float(min(h, w)))
    out = c1 + (c2 - c1) * p[..., None]
    light = np.float32(0.8) + np.float32(0.35) * _value_noise(rng, h, w, cell=max(h, w) / 2, octaves=2)
    return out * light[..., None]


# --------------------------------------------------------------------------------------------
# Painter
# --------------------------------------------------------------------------------------------
class _Painter:
    def __init__(self, rng: np.random.Generator, h: int, w: int) -> None:
        self.rng, self.h, self.w = rng, h, w
        self.yy = np.arange(h, dtype=np.float32)[:, None]
        self.xx = np.arange(w, dtype=np.float32)[None, :]
        self.image = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), np.int32)  # 0 = background, not annotated
        self.next_label = 1
        self.colour: dict[int, np.ndarray] = {}

    def new_label(self) -> int:
        lab = self.next_label
        self.next_label += 1
        return lab

    def paint_background(self) -> list[tuple[list[int], str]]:
        rng, h, w = self.rng, self.h, self.w
        self.image[:] = _background(rng, self.yy, self.xx, h, w)
        if rng.random() >= 0.4:
            return []
        # A wavy horizon splits the frame into two "stuff" regions, each annotated.
        base = rng.uniform(0.35, 0.7) * h
        amp = rng.uniform(0.02, 0.08) * h
        freq = rng.uniform(0.5, 3.0) * 2 * math.pi / w
        ph = rng.uniform(0, 2 * math.pi)
        tilt = rng.uniform(-0.15, 0.15) * h
        line = base + amp * np.sin(self.xx * freq + ph) + tilt * (self.xx / w - 0.5)
        lower = self.yy >= line
        ground = _background(self.rng, self.yy, self.xx, h, w)
        # Keep the two regions apart in colour.
        ref = self.image[lower].mean(0) if lower.any() else self.image.reshape(-1, 3).mean(0)
        shift = _contrasting_colour(rng, ref, 80.0) - ground[lower].mean(0) if lower.any() else 0
        ground = ground + shift
        self.image[lower] = ground[lower]
        top, bottom = self.new_label(), self.new_label()
        self.label[~lower] = top
        self.label[lower] = bottom
        return [([top], "stuff"), ([bottom], "stuff")]

    def paint(self, shape: _Shape, within: int | None = None, min_contrast: float = 90.0) -> int | None:
        """Draw ``shape`` (clipped to the label ``within`` if given); returns its label or None
        when nothing of it lands in the frame."""
        ext = shape.extent
        y0, y1 = max(0, int(math.floor(shape.cy - ext))), min(self.h, int(math.ceil(shape.cy + ext)) + 1)
        x0, x1 = max(0, int(math.floor(shape.cx - ext))), min(self.w, int(math.ceil(shape.cx + ext)) + 1)
        if y1 <= y0 or x1 <= x0:
            return None
        yy, xx = self.yy[y0:y1], self.xx[:, x0:x1]
        rho = shape.rho(yy, xx)
        m = shape.mask(rho)
        lab_win = self.label[y0:y1, x0:x1]
        if within is not None:
            m &= lab_win == within
        if not m.any():
            return None
        img_win = self.image[y0:y1, x0:x1]
        ref = img_win[m].mean(0)
        rng = self.rng
        base = _contrasting_colour(rng, ref, min_contrast)
        tex = np.broadcast_to(base, rho.shape + (3,)).copy()
        # Linear gradient across the object.
        theta = rng.uniform(0, 2 * math.pi)
        g = ((xx - np.float32(shape.cx)) * np.float32(math.cos(theta))
             + (yy - np.float32(shape.cy)) * np.float32(math.sin(theta))) / np.float32(shape.r)
        tex += (np.float32(rng.uniform(0, 30)) * g)[..., None]
        # Rim shading (darker towards the boundary).
        s = np.float32(rng.uniform(0.0, 0.3))
        tex *= (np.float32(1) - s * np.clip(rho, 0, 1) ** 2)[..., None]
        # Pattern, weaker than the contrast with what lies underneath.
        kind = str(rng.choice(["none", "none", "stripes", "checker", "dots", "noise"]))
        if kind != "none":
            p = _pattern(rng, kind, yy, xx, scale=2 * shape.r)
            delta = rng.normal(0, 1, 3).astype(np.float32)
            delta *= np.float32(rng.uniform(12, 35)) / np.float32(np.linalg.norm(delta) + 1e-6)
            tex += delta * p[..., None]
        img_win[m] = tex[m]
        lab = self.new_label()
        lab_win[m] = lab
        self.colour[lab] = base
        return lab


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------
def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        h = w = int(image_size)
    else:
        h, w = (int(v) for v in image_size)
    if h < 16 or w < 16 or h > 4096 or w > 4096:
        raise ValueError(f"image_size must be between 16 and 4096 pixels per side, got {(h, w)}")
    return h, w


def _rng_for(seed: int, index: int) -> np.random.Generator:
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def render_scene(seed: int | np.random.Generator, image_size: int | Sequence[int] = 256,
                 *, min_area_fraction: float = MIN_AREA_FRACTION) -> Scene:
    """Draw one scene. ``seed`` is an int or a numpy Generator; ``image_size`` an int (square) or
    (H, W). Returns the uint8 image and its visible masks (see the module docstring)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    h, w = _size_hw(image_size)
    smin = float(min(h, w))
    painter = _Painter(rng, h, w)
    # groups: (labels making up the visible region, level, shape kind, parent group index)
    groups: list[tuple[list[int], str, str, int | None]] = [
        (labs, level, "background", None) for labs, level in painter.paint_background()
    ]
    n_objects = int(rng.integers(4, 13))
    nested = np.zeros(n_objects, bool)
    nested[rng.choice(n_objects, size=min(n_objects, int(rng.integers(1, 3))), replace=False)] = True
    for is_nested in nested:
        if is_nested:
            kind = str(rng.choice(_CONTAINER_KINDS, p=_CONTAINER_P))
            r = smin * float(rng.uniform(0.17, 0.3))
        else:
            kind = str(rng.choice(_OBJECT_KINDS, p=_OBJECT_P))
            r = smin * float(np.exp(rng.uniform(math.log(0.045), math.log(0.2))))
        margin = 0.1 * r
        cx = float(rng.uniform(margin, w - margin))
        cy = float(rng.uniform(margin, h - margin))
        body_shape = _random_shape(rng, kind, cx, cy, r)
        if is_nested:  # room for a panel
            body_shape.aspect = max(body_shape.aspect, 0.65)
        body = painter.paint(body_shape)
        if body is None:
            continue
        if not is_nested:
            groups.append(([body], "object", kind, None))
            continue
        # Panel inside the body, one or two buttons inside the panel.
        inner = body_shape.inner
        pkind = str(rng.choice(_CONTAINER_KINDS, p=_CONTAINER_P))
        pr = inner * float(rng.uniform(0.55, 0.8))
        off = (inner - pr) * float(rng.uniform(0, 0.5))
        a = float(rng.uniform(0, 2 * math.pi))
        panel_shape = _random_shape(rng, pkind, cx + off * math.cos(a), cy + off * math.sin(a), pr)
        panel_shape.aspect = max(panel_shape.aspect, 0.65)
        panel = painter.paint(panel_shape, within=body, min_contrast=80.0)
        if panel is None:
            groups.append(([body], "object", kind, None))
            continue
        buttons: list[tuple[int, str]] = []
        pin = panel_shape.inner
        n_buttons = 1 if rng.random() < 0.7 else 2
        for b in range(n_buttons):
            bkind = str(rng.choice(["ellipse", "superellipse", "polygon", "star"]))
            br = pin * float(rng.uniform(0.4, 0.6) if n_buttons == 1 else rng.uniform(0.3, 0.42))
            if n_buttons == 1:
                boff = (pin - br) * float(rng.uniform(0, 0.5))
                ba = float(rng.uniform(0, 2 * math.pi))
            else:
                boff = (pin - br) * 0.6
                ba = float(rng.uniform(0, 2 * math.pi)) if b == 0 else ba + math.pi
            bshape = _random_shape(rng, bkind, panel_shape.cx + boff * math.cos(ba),
                                   panel_shape.cy + boff * math.sin(ba), br)
            button = painter.paint(bshape, within=panel, min_contrast=80.0)
            if button is not None:
                buttons.append((button, bkind))
        whole_idx = len(groups)
        groups.append(([body, panel] + [b for b, _ in buttons], "whole", kind, None))
        part_idx = len(groups)
        groups.append(([panel] + [b for b, _ in buttons], "part", pkind, whole_idx))
        for b, bkind in buttons:
            groups.append(([b], "subpart", bkind, part_idx))

    # Mild sensor noise, then quantise.
    sigma = np.float32(rng.uniform(1.0, 4.0))
    img = painter.image + sigma * rng.standard_normal((h, w, 3), dtype=np.float32)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)

    # Visible masks (later objects have overwritten the labels of what they cover).
    min_area = max(1, int(math.ceil(min_area_fraction * h * w)))
    lut = np.zeros(painter.next_label, bool)
    visible: list[np.ndarray | None] = []
    for labs, *_ in groups:
        lut[:] = False
        lut[labs] = True
        m = lut[painter.label]
        visible.append(m if int(m.sum()) >= min_area else None)
    # A container that shows (almost) nothing besides one child adds no new mask: drop it.
    for i, (_, _, _, parent) in enumerate(groups):
        if parent is not None and visible[i] is not None and visible[parent] is not None:
            if int(visible[parent].sum()) - int(visible[i].sum()) < min_area:
                visible[parent] = None
    new_index: dict[int, int] = {}
    masks: list[SceneMask] = []
    for i, (_, level, kind, parent) in enumerate(groups):
        if visible[i] is None:
            continue
        while parent is not None and visible[parent] is None:  # nearest kept container
            parent = groups[parent][3]
        new_index[i] = len(masks)
        masks.append(SceneMask(visible[i], level, kind, new_index[parent] if parent is not None else None))
    return Scene(image, masks)


# --------------------------------------------------------------------------------------------
# SA-1B records
# --------------------------------------------------------------------------------------------
def _interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of a pixel deep inside ``mask`` (max of the distance transform on a <= 96 px
    sub-sampling of its bounding box)."""
    from scipy import ndimage

    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mask[y0:y1, x0:x1]
    step = max(1, int(math.ceil(max(crop.shape) / 96)))
    small = crop[::step, ::step]
    if not small.any():
        iy, ix = np.unravel_index(int(np.argmax(crop)), crop.shape)
        return float(x0 + ix), float(y0 + iy)
    dist = ndimage.distance_transform_edt(np.pad(small, 1))[1:-1, 1:-1]
    iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x0 + ix * step), float(y0 + iy * step)


def _bbox_xywh(mask: np.ndarray) -> list[float]:
    """SAM's convention (``batched_mask_to_box`` then XYWH): x1/y1 are the last mask pixel, so
    ``x + w`` is the right-most column, as in SA-1B."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0]), float(rows[-1] - rows[0])]


def scene_to_sa1b(image_id: int, scene: Scene, file_name: str | None = None) -> dict[str, Any]:
    """The SA-1B JSON record of a scene (ground truth: predicted_iou = stability_score = 1).
    Each annotation also carries ``"synth": {"level", "shape", "parent"}`` (``parent``: the
    annotation id of the containing mask or null), which SA-1B readers ignore."""
    from pycocotools import mask as mask_utils

    h, w = scene.image.shape[:2]
    anns = []
    ids = [image_id * 1000 + k for k in range(len(scene.masks))]
    if len(scene.masks) >= 1000:
        raise ValueError("at most 999 masks per image")
    for k, sm in enumerate(scene.masks):
        rle = mask_utils.encode(np.asfortranarray(sm.mask.astype(np.uint8)))
        x, y = _interior_point(sm.mask)
        anns.append({
            "id": ids[k],
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
            "bbox": _bbox_xywh(sm.mask),
            "area": int(sm.mask.sum()),
            "predicted_iou": 1.0,
            "point_coords": [[x, y]],
            "crop_box": [0.0, 0.0, float(w), float(h)],
            "stability_score": 1.0,
            "synth": {"level": sm.level, "shape": sm.shape,
                      "parent": ids[sm.parent] if sm.parent is not None else None},
        })
    return {
        "image": {"image_id": int(image_id), "width": int(w), "height": int(h),
                  "file_name": file_name or f"sa_{image_id}.jpg"},
        "annotations": anns,
    }


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0, optimize=False)
    return buf.getvalue()


def _json_bytes(obj: Any) -> bytes:
    from sam_edge.utils.io import dumps_json

    return dumps_json(obj, separators=(",", ":")).encode("utf-8")


def generate_image(index: int, image_size: int | Sequence[int], seed: int,
                   jpeg_quality: int = JPEG_QUALITY) -> tuple[bytes, dict[str, Any]]:
    """Image ``sa_<index>``: (JPEG bytes, SA-1B JSON record). Deterministic in (seed, index)."""
    scene = render_scene(_rng_for(seed, index), image_size)
    return _encode_jpeg(scene.image, jpeg_quality), scene_to_sa1b(index, scene)


# --------------------------------------------------------------------------------------------
# Datasets on disk
# --------------------------------------------------------------------------------------------
def _level_counts(record: dict[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys(LEVELS, 0)
    for ann in record["annotations"]:
        level = ann.get("synth", {}).get("level")
        if level in counts:
            counts[level] += 1
    return counts


def _existing_record(jpg: Path, js: Path, index: int, h: int, w: int) -> dict[str, Any] | None:
    """The JSON record if ``jpg`` + ``js`` are a complete, matching pair, else None."""
    if not (jpg.is_file() and js.is_file()):
        return None
    try:
        record = json.loads(js.read_bytes())
        info = record["image"]
        if (info["image_id"], info["width"], info["height"], info["file_name"]) != (index, w, h, jpg.name):
            return None
        if not isinstance(record["annotations"], list):
            return None
        with Image.open(jpg) as im:
            if im.size != (w, h):
                return None
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except Exception:  # noqa: BLE001 - anything unreadable is regenerated
        return None
    return record


def _generate_one(job: tuple[str, int, tuple[int, int], int, int]) -> tuple[int, dict[str, int], bool]:
    from sam_edge.utils.io import atomic_path

    out, index, (h, w), seed, quality = job
    out_dir = Path(out)
    jpg, js = out_dir / f"sa_{index}.jpg", out_dir / f"sa_{index}.json"
    record = _existing_record(jpg, js, index, h, w)
    if record is not None:
        return index, _level_counts(record), False
    data, record = generate_image(index, (h, w), seed, quality)
    # The image first, the JSON last: a JSON present means the pair is complete.
    with atomic_path(jpg) as tmp:
        tmp.write_bytes(data)
    with atomic_path(js) as tmp:
        tmp.write_bytes(_json_bytes(record))
    return index, _level_counts(record), True


def generate_dataset(out: str | Path, num_images: int, image_size: int | Sequence[int] = 256,
                     seed: int = 0, workers: int = 1, *, jpeg_quality: int = JPEG_QUALITY,
                     progress: bool = False) -> dict[str, Any]:
    """Write ``sa_1 .. sa_<num_images>`` (``.jpg`` + ``.json``) and ``index.json`` under ``out``.

    Rerunning resumes: complete pairs are kept, anything else is (re)generated; a larger
    ``num_images`` extends the set with the same first images. ``out`` holding a set made with a
    different seed, size or generator version raises ``ValueError``. Returns the index dict
    (also written as ``index.json``; it adds ``generated`` / ``reused`` counts to the returned
    dict only, so the file stays byte-identical across resumed runs)."""
    num_images = int(num_images)
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    h, w = _size_hw(image_size)
    _rng_for(seed, 0)  # validates the seed
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    from sam_edge.utils.io import remove_stale_temps

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # a killed run's half-written files
    # "generator" names this generator in index.json; it keeps its first module name ("distill.synth")
    # so that datasets written before the package moved stay valid for resume
    params = {"format": "sa1b", "generator": "distill.synth", "version": GENERATOR_VERSION,
              "seed": int(seed), "image_size": [h, w], "jpeg_quality": int(jpeg_quality)}
    index_path = out / "index.json"
    if index_path.exists():
        try:
            old = json.loads(index_path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"{index_path}: unreadable index ({exc}); remove it or use another --out") from exc
        differing = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        if differing:
            detail = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in differing.items())
            raise ValueError(f"{out} holds a synthetic set made with other settings ({detail}); "
                             "use another --out or delete it")
    else:
        from sam_edge.utils.io import write_bytes_atomic

        write_bytes_atomic(index_path, _json_bytes({**params, "complete": False}))

    jobs = [(str(out), i, (h, w), int(seed), int(jpeg_quality)) for i in range(1, num_images + 1)]
    results: list[tuple[int, dict[str, int], bool]] = []
    workers = max(1, int(workers))
    if workers == 1 or num_images == 1:
        for done, job in enumerate(jobs, 1):
            results.append(_generate_one(job))
            if progress and (done % 100 == 0 or done == num_images):
                log.info("%d/%d images", done, num_images)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        method = "fork" if "fork" in mp.get_all_start_methods() else None
        ctx = mp.get_context(method)
        chunk = max(1, min(16, num_images // (workers * 4)))
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for done, res in enumerate(pool.map(_generate_one, jobs, chunksize=chunk), 1):
                results.append(res)
                if progress and (done % 100 == 0 or done == num_images):
                    log.info("%d/%d images", done, num_images)

    levels = dict.fromkeys(LEVELS, 0)
    images = []
    for index, counts, _ in sorted(results, key=lambda r: r[0]):
        for k, v in counts.items():
            levels[k] += v
        images.append({"id": f"sa_{index}", "num_masks": sum(counts.values())})
    index = {**params, "complete": True, "num_images": num_images,
             "num_masks": sum(levels.values()), "masks_per_level": levels,
             "min_area_fraction": MIN_AREA_FRACTION, "images": images}
    from sam_edge.utils.io import write_bytes_atomic

    write_bytes_atomic(index_path, _json_bytes(index))
    generated = sum(1 for r in results if r[2])
    return {**index, "generated": generated, "reused": num_images - generated}
