"""Synthetic scenes for the SA-1B-format generator (:mod:`sam_edge.data.synth`): drawing one
image and its visible ground-truth masks. See :mod:`sam_edge.data.synth` for what a scene holds
and how the dataset is written; this module only renders (no files)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

#: Masks whose visible area is below this fraction of the image are dropped.
MIN_AREA_FRACTION = 0.001
LEVELS = ("stuff", "object", "whole", "part", "subpart")

__all__ = ["LEVELS", "MIN_AREA_FRACTION", "Scene", "SceneMask", "render_scene"]


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
