"""Train / held-out split of the dataset: images whose side metadata (`images.meta`, e.g. synth
ground truth) says `"split": "held_out"` are never trained on, so evaluation can use them as
subjects the model has not seen."""

from __future__ import annotations

import json

HELD_OUT = "held_out"


def is_held_out(meta: str | None) -> bool:
    if not meta:
        return False
    try:
        value = json.loads(meta)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("split") == HELD_OUT
