"""Pure renderer of the synthetic world: `render(identity, scene, size)` -> (RGB image, L mask).

Same inputs give the same pixels. The identity (shape, palette, texture, eyes) is drawn in the
object's own frame, so it rotates with the object; the scene (background, position, scale,
rotation, lighting) only says where and how it is seen. Vocabularies are plain English so
captions and prompts can use them verbatim; values were picked to stay distinct at 32-64 px.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
Frame = tuple[float, float, float, float]  # object center x, y (pixels), radius (pixels), angle

# --- identity vocabularies -------------------------------------------------------------------
# No brown/gray/black: dim light would make them look like dimmed orange/white.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (250, 140, 20),
    "yellow": (250, 225, 40),
    "green": (40, 170, 60),
    "teal": (30, 190, 190),
    "blue": (40, 80, 230),
    "purple": (140, 60, 200),
    "pink": (250, 130, 200),
    "white": (245, 245, 245),
}
TEXTURES = ("solid", "striped", "dotted", "checkered", "gradient", "ringed")
# Eyes break every shape's symmetry, so rotation stays visible even on a solid circle.
EYES = ("one eye", "two eyes")

# Shapes in a local frame: unit radius, y up, "upright" pose. A primitive is ("poly", points)
# or ("disc", center, radius, fill); fill 0 cuts a hole (the crescent).
Primitive = tuple
_STAR = [((1.0, 0.45)[k % 2] * math.cos(math.pi / 2 + k * math.pi / 5),  # tips, then notches
          (1.0, 0.45)[k % 2] * math.sin(math.pi / 2 + k * math.pi / 5)) for k in range(10)]
_ARC = np.linspace(-math.pi / 2, math.pi / 2, 9)  # capsule end caps: right half, then left half
_CAPSULE = ([(0.5 + 0.45 * math.cos(a), 0.45 * math.sin(a)) for a in _ARC]
            + [(-0.5 - 0.45 * math.cos(a), -0.45 * math.sin(a)) for a in _ARC])
SHAPE_GEOMETRY: dict[str, list[Primitive]] = {
    "circle": [("disc", (0.0, 0.0), 0.92, 255)],
    "square": [("poly", [(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)])],
    "triangle": [("poly", [(0.0, 1.0), (-0.9, -0.6), (0.9, -0.6)])],
    "star": [("poly", _STAR)],
    "heart": [("disc", (-0.42, 0.32), 0.47, 255), ("disc", (0.42, 0.32), 0.47, 255),
              ("poly", [(-0.86, 0.18), (0.86, 0.18), (0.0, -0.95)])],
    "cross": [("poly", [(-0.3, 0.9), (0.3, 0.9), (0.3, 0.3), (0.9, 0.3), (0.9, -0.3),
                        (0.3, -0.3), (0.3, -0.9), (-0.3, -0.9), (-0.3, -0.3), (-0.9, -0.3),
                        (-0.9, 0.3), (-0.3, 0.3)])],
    "crescent": [("disc", (0.0, 0.0), 0.95, 255), ("disc", (0.45, 0.2), 0.8, 0)],
    "arrow": [("poly", [(0.0, 1.0), (0.75, 0.2), (0.3, 0.2), (0.3, -0.95), (-0.3, -0.95),
                        (-0.3, 0.2), (-0.75, 0.2)])],
    "capsule": [("poly", _CAPSULE)],
}
SHAPES = tuple(SHAPE_GEOMETRY)
# Eye centers per shape, placed where the body is wide enough to hold them.
_EYE_POSITIONS: dict[str, dict[str, list[Point]]] = {
    "circle": {"one eye": [(0.0, 0.4)], "two eyes": [(-0.3, 0.3), (0.3, 0.3)]},
    "square": {"one eye": [(0.0, 0.35)], "two eyes": [(-0.3, 0.3), (0.3, 0.3)]},
    "triangle": {"one eye": [(0.0, 0.3)], "two eyes": [(-0.22, 0.05), (0.22, 0.05)]},
    "star": {"one eye": [(0.0, 0.22)], "two eyes": [(-0.17, 0.1), (0.17, 0.1)]},
    "heart": {"one eye": [(0.0, 0.2)], "two eyes": [(-0.42, 0.35), (0.42, 0.35)]},
    "cross": {"one eye": [(0.0, 0.5)], "two eyes": [(-0.15, 0.08), (0.15, 0.08)]},
    "crescent": {"one eye": [(-0.65, 0.1)], "two eyes": [(-0.62, 0.3), (-0.62, -0.2)]},
    "arrow": {"one eye": [(0.0, 0.45)], "two eyes": [(-0.2, 0.38), (0.2, 0.38)]},
    "capsule": {"one eye": [(0.5, 0.1)], "two eyes": [(0.5, 0.2), (0.5, -0.2)]},
}
_EYE_RADIUS = 0.14  # of the object radius
_EYE_COLOR = np.array([15.0, 15.0, 15.0], dtype=np.float32)

# --- scene vocabularies ----------------------------------------------------------------------
BACKGROUNDS = ("white", "black", "gray", "dark blue", "sky", "grass", "wood", "tiles")
# (column, row) in {-1, 0, 1}: image x grows right, y grows down.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (-1, -1), "top": (0, -1), "top right": (1, -1),
    "left": (-1, 0), "center": (0, 0), "right": (1, 0),
    "bottom left": (-1, 1), "bottom": (0, 1), "bottom right": (1, 1),
}
SCALES: dict[str, float] = {"small": 0.15, "medium": 0.23, "large": 0.32}  # radius / image side
ROTATIONS: dict[str, float] = {"upright": 0.0, "tilted left": 35.0, "tilted right": -35.0,
                               "upside down": 180.0}  # degrees, counter-clockwise
LIGHTINGS = ("bright", "dim", "lit from the left", "lit from the right")
_JITTER_POSITION = 0.03  # of the image side: views in one bucket are not pixel-identical
_JITTER_DEGREES = 6.0
_SUPERSAMPLE = 4  # shape edges are drawn 4x larger and box-filtered down (antialiasing)


@dataclass(frozen=True)
class Identity:
    """What stays the same across views of one object."""

    shape: str
    primary: str
    secondary: str
    texture: str
    eyes: str

    def __post_init__(self) -> None:
        _check(("shape", self.shape, SHAPES), ("primary", self.primary, COLORS),
               ("secondary", self.secondary, COLORS), ("texture", self.texture, TEXTURES),
               ("eyes", self.eyes, EYES))
        if self.primary == self.secondary:
            raise ValueError("primary and secondary colors must differ, or the texture vanishes")

    def attributes(self) -> dict[str, str]:
        """Ground-truth labels, named as in the vocabularies."""
        return asdict(self)


@dataclass(frozen=True)
class Scene:
    """How one view sees an object; `variation` seeds small jitter inside the buckets."""

    background: str
    position: str
    scale: str
    rotation: str
    lighting: str
    variation: int = 0

    def __post_init__(self) -> None:
        _check(("background", self.background, BACKGROUNDS), ("position", self.position, POSITIONS),
               ("scale", self.scale, SCALES), ("rotation", self.rotation, ROTATIONS),
               ("lighting", self.lighting, LIGHTINGS))

    def attributes(self) -> dict[str, str]:
        """Categorical labels only; `variation` is not something a classifier could name."""
        attrs = asdict(self)
        del attrs["variation"]
        return attrs


def _check(*fields: tuple[str, str, Collection[str]]) -> None:
    """Fail on construction, naming the field, rather than drawing something unlabeled."""
    for name, value, vocab in fields:
        if value not in vocab:
            raise ValueError(f"unknown {name} {value!r}; expected one of {list(vocab)}")


def render(identity: Identity, scene: Scene, size: int) -> tuple[Image.Image, Image.Image]:
    """Draw one view: an RGB image and an L mask (255 = object)."""
    jitter = np.random.default_rng(scene.variation).uniform(-1.0, 1.0, 3)
    radius = SCALES[scene.scale] * size
    col, row = POSITIONS[scene.position]
    reach = 0.5 * size - 1.08 * radius  # farthest offset that keeps the object in frame
    cx = 0.5 * size + col * reach + jitter[0] * _JITTER_POSITION * size
    cy = 0.5 * size + row * reach + jitter[1] * _JITTER_POSITION * size
    angle = math.radians(ROTATIONS[scene.rotation] + jitter[2] * _JITTER_DEGREES)
    frame = (cx, cy, radius, angle)

    alpha = _coverage(SHAPE_GEOMETRY[identity.shape], frame, size)  # (H, W) in [0, 1]
    eye_centers = _EYE_POSITIONS[identity.shape][identity.eyes]
    eye_discs = [("disc", p, _EYE_RADIUS, 255) for p in eye_centers]
    eyes = _coverage(eye_discs, frame, size) * alpha

    u, v = _local_coordinates(frame, size)
    t = _texture(identity.texture, u, v)[..., None]  # (H, W, 1): 0 = primary, 1 = secondary
    primary = np.array(COLORS[identity.primary], dtype=np.float32)
    secondary = np.array(COLORS[identity.secondary], dtype=np.float32)
    body = primary * (1.0 - t) + secondary * t  # (H, W, 3)
    rim = _rim(alpha, max(1, round(size / 32)))[..., None]  # secondary outline: visible on "solid"
    body = body * (1.0 - rim) + secondary * rim
    body = body * (1.0 - eyes[..., None]) + _EYE_COLOR * eyes[..., None]

    a = alpha[..., None]
    rgb = _background(scene.background, size) * (1.0 - a) + body * a
    rgb *= _lighting(scene.lighting, size)
    image = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    # any coverage counts, so every pixel outside the mask is pure background
    mask = Image.fromarray(np.where(alpha > 0.0, 255, 0).astype(np.uint8), "L")
    return image, mask


def _coverage(primitives: list[Primitive], frame: Frame, size: int) -> np.ndarray:
    """Fraction of each pixel covered by the primitives, drawn supersampled then box-filtered."""
    cx, cy, radius, angle = frame
    cos, sin, ss = math.cos(angle), math.sin(angle), _SUPERSAMPLE

    def to_canvas(p: Point) -> Point:
        x, y = p
        return (ss * (cx + radius * (x * cos - y * sin)), ss * (cy - radius * (x * sin + y * cos)))

    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for prim in primitives:
        if prim[0] == "poly":
            draw.polygon([to_canvas(p) for p in prim[1]], fill=255)
        else:
            (x, y), r = to_canvas(prim[1]), prim[2] * radius * ss
            draw.ellipse((x - r, y - r, x + r, y + r), fill=prim[3])
    return np.asarray(canvas.reduce(ss), dtype=np.float32) / 255.0


def _local_coordinates(frame: Frame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centers in the object's frame (unit radius, y up), so textures turn with it."""
    cx, cy, radius, angle = frame
    xs, ys = _pixel_centers(size)
    dx, dy = (xs - cx) / radius, (cy - ys) / radius
    cos, sin = math.cos(angle), math.sin(angle)
    return dx * cos + dy * sin, dy * cos - dx * sin


def _texture(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Share of secondary color per pixel; periods of ~0.6 radius stay readable at small scale."""
    if name == "solid":
        return np.zeros_like(u)
    if name == "striped":
        return (np.floor(u / 0.3) % 2).astype(np.float32)
    if name == "dotted":
        du, dv = (u + 0.3) % 0.6 - 0.3, (v + 0.3) % 0.6 - 0.3
        return (du * du + dv * dv < 0.19 ** 2).astype(np.float32)
    if name == "checkered":
        return ((np.floor(u / 0.45) + np.floor(v / 0.45)) % 2).astype(np.float32)
    if name == "gradient":
        return np.clip(0.5 - 0.5 * v, 0.0, 1.0)  # primary at the top, secondary at the bottom
    if name == "ringed":
        return (np.floor(np.sqrt(u * u + v * v) / 0.3) % 2).astype(np.float32)
    raise ValueError(f"unknown texture {name!r}")


def _rim(alpha: np.ndarray, width: int) -> np.ndarray:
    """Coverage of the object's outer band `width` pixels wide (alpha minus its erosion)."""
    inner = alpha
    for _ in range(width):
        padded = np.pad(inner, 1)
        inner = np.minimum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                   padded[1:-1, :-2], padded[1:-1, 2:]])
    return alpha - inner


@lru_cache(maxsize=64)
def _pixel_centers(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


@lru_cache(maxsize=256)
def _background(name: str, size: int) -> np.ndarray:
    """(H, W, 3) float background; cached because it depends on nothing but name and size."""
    xs, ys = _pixel_centers(size)
    fy = (ys / size)[..., None]  # 0 at the top, 1 at the bottom
    flat = {"white": (235, 235, 235), "black": (25, 25, 25), "gray": (128, 128, 128),
            "dark blue": (20, 30, 90)}
    if name in flat:
        return np.broadcast_to(np.array(flat[name], np.float32), (size, size, 3)).copy()
    if name == "sky":
        return _mix((90, 150, 235), (215, 235, 250), fy)
    if name == "grass":
        return _mix((200, 225, 245), (60, 140, 50), (fy > 0.45).astype(np.float32))
    if name == "wood":
        phase = ys / size * 2 * math.pi * 7 + 0.8 * np.sin(xs / size * 5)  # wavy horizontal grain
        grain = (0.5 + 0.5 * np.sin(phase))[..., None]
        return _mix((150, 100, 55), (185, 135, 80), grain)
    if name == "tiles":
        check = ((np.floor(xs / size * 4) + np.floor(ys / size * 4)) % 2)[..., None]
        return _mix((200, 195, 185), (150, 145, 140), check)
    raise ValueError(f"unknown background {name!r}")


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: np.ndarray) -> np.ndarray:
    return (np.array(a, np.float32) * (1.0 - t) + np.array(b, np.float32) * t).astype(np.float32)


@lru_cache(maxsize=64)
def _lighting(name: str, size: int) -> np.ndarray:
    """(H, W, 1) brightness gain applied to the whole view."""
    xs, _ = _pixel_centers(size)
    ramp = (xs / size)[..., None]  # 0 at the left edge, 1 at the right
    gains = {"bright": np.full_like(ramp, 1.08), "dim": np.full_like(ramp, 0.6),
             "lit from the left": 1.15 - 0.6 * ramp, "lit from the right": 0.55 + 0.6 * ramp}
    if name not in gains:
        raise ValueError(f"unknown lighting {name!r}")
    return gains[name].astype(np.float32)
