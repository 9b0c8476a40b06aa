"""Reference photos (`tamer generate --image`, the web app's uploads): the same validation and
normalization as ingested images, so a bomb, a truncated file or HTML is refused in one line."""

from __future__ import annotations

from storage.images import BadImage, DecodedImage, ImageLimits, decode_image
from tamer.config import IngestSettings

__all__ = ["BadImage", "decode_reference", "problem"]


def decode_reference(data: bytes, settings: IngestSettings) -> DecodedImage:
    """The upright RGB image of `data` under the ingest limits; raises BadImage otherwise."""
    limits = ImageLimits(max_pixels=settings.max_pixels, min_side=settings.min_side,
                         max_bytes=settings.max_bytes)
    return decode_image(data, limits)


def problem(exc: BadImage) -> str:
    """What the user reads: the quarantine code and its detail."""
    return f"{exc.reason} ({exc.detail})"
