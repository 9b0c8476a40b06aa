"""Decode untrusted image bytes into a normalized RGB image, or say exactly why not.

Every image is fully decoded (a header check such as `verify()` misses truncated data),
EXIF-rotated and converted to 8-bit RGB; pixel limits are checked from the header before
any pixel is decoded, so decompression bombs are rejected cheaply.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats we accept as training images; anything else PIL can open is "unsupported_format".
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM"})
# Stored as-is when already RGB and upright: no re-encoding, no quality loss.
PASSTHROUGH_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})


@dataclass(frozen=True)
class ImageLimits:
    """Size limits applied to every decoded image."""

    max_pixels: int = 64_000_000  # width * height above this is a decompression bomb
    min_side: int = 32  # smaller images are kept but flagged "tiny"
    max_bytes: int = 64 * 1024 * 1024  # larger files are rejected before decoding


@dataclass
class DecodedImage:
    """A normalized RGB image plus what we learned about the original."""

    image: bytes  # encoded RGB image (original bytes when they already were RGB)
    width: int
    height: int
    format: str
    mode: str
    flags: list[str] = field(default_factory=list)


class BadImage(Exception):
    """Raised for input that must be quarantined; `reason` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode, validate and normalize one image; raise BadImage with a reason otherwise."""
    if not data:
        raise BadImage("empty", "zero bytes")
    if len(data) > limits.max_bytes:
        raise BadImage("too_large", f"{len(data)} bytes > max_bytes {limits.max_bytes}")
    image = _open(data, limits)
    original_format, original_mode = image.format or "UNKNOWN", image.mode
    flags: list[str] = []
    if getattr(image, "n_frames", 1) > 1:
        flags.append("multi_frame")  # first frame kept
    _load_fully(image)
    rotated = _has_orientation(image)
    rgb = to_rgb(ImageOps.exif_transpose(image) if rotated else image)
    width, height = rgb.size
    if min(width, height) < limits.min_side:
        flags.append("tiny")
    keep_original = (
        original_format in PASSTHROUGH_FORMATS
        and original_mode == "RGB"
        and not rotated
        and "multi_frame" not in flags
    )
    encoded = data if keep_original else encode(rgb, lossy=original_format in LOSSY_FORMATS)
    return DecodedImage(encoded, width, height, original_format, original_mode, flags)


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise BadImage("not_an_image", "no image format recognized") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is bad input
        raise BadImage(_failure_reason(exc), f"{type(exc).__name__}: {exc}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise BadImage("unsupported_format", f"format {image.format} is not accepted")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise BadImage(
            "decompression_bomb", f"{width}x{height} exceeds max_pixels {limits.max_pixels}"
        )
    if width < 1 or height < 1:
        raise BadImage("corrupt", f"invalid size {width}x{height}")
    return image


def _load_fully(image: Image.Image) -> None:
    try:
        image.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        raise BadImage(_failure_reason(exc), f"{type(exc).__name__}: {exc}") from None


def _failure_reason(exc: Exception) -> str:
    return "truncated" if "truncated" in str(exc).lower() else "corrupt"


def _has_orientation(image: Image.Image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) not in (0, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF means no rotation was applied
        return False


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency is composited on white, 16-bit scaled to 8-bit, float clamped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = _sixteen_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return image


def _sixteen_to_l(image: Image.Image) -> Image.Image:
    """16-bit values v -> round(v / 257), so 65535 -> 255 and every image keeps its own
    brightness (a per-image stretch would make a dim scan as bright as a sunny one). Pillow
    also holds 16-bit data in mode I; values beyond 16 bits are clamped."""
    array = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.rint(array / 257).astype(np.uint8), mode="L")


def encode(image: Image.Image, *, lossy: bool) -> bytes:
    """PNG for lossless sources; JPEG q95 when the source was already lossy."""
    buffer = io.BytesIO()
    if lossy:
        image.save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_mask(data: bytes, size: tuple[int, int]) -> bytes:
    """A foreground mask as PNG in mode L at the image's size; raises BadImage if unusable."""
    mask = _open(data, ImageLimits())
    _load_fully(mask)
    if mask.format == "PNG" and mask.mode == "L" and mask.size == size:
        return data  # already what we store
    mask = ImageOps.exif_transpose(mask).convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return encode(mask, lossy=False)


def load_rgb(data: bytes) -> Image.Image:
    """Open stored (already validated) image bytes as an RGB PIL image."""
    image = Image.open(io.BytesIO(data))
    return image.convert("RGB") if image.mode != "RGB" else image
