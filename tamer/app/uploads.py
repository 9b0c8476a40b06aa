"""Files the user hands the app (a reference photo, a search image): validated like ingested
images (`tamer generate --image`'s check) and kept normalized in the app's scratch folder."""

from __future__ import annotations

import uuid
from pathlib import Path

from storage.local_files import Refused, read_regular
from tamer.app.reader import AppContext
from tamer.reference import BadImage, decode_reference, problem


class UserError(ValueError):
    """Input the user can fix; the message is shown as it is."""


def validated_upload(ctx: AppContext, path: str | None) -> Path:
    """The upright RGB copy of an uploaded image; UserError saying why when it is unusable."""
    if not path:
        raise UserError("upload a photo of the object, or pick a dataset image")
    settings = ctx.config.ingest
    try:
        decoded = decode_reference(read_regular(path, settings.max_bytes), settings)
    except Refused as exc:
        raise UserError(f"this upload is not usable: {exc.reason} ({exc.detail})") from None
    except BadImage as exc:
        raise UserError(f"this upload is not usable: {problem(exc)}") from None
    return _keep(ctx, decoded.image)


def stored_image(ctx: AppContext, image_id: str | None) -> Path:
    """A dataset image (validated at ingest) as a file."""
    data = ctx.image_bytes(image_id) if image_id else None
    if data is None:
        raise UserError(f"no image {image_id} in the dataset")
    return _keep(ctx, data)


def _keep(ctx: AppContext, data: bytes) -> Path:
    path = ctx.work_dir / "uploads" / uuid.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
