"""The evaluation methods' registry: one line per method. evaluate builds from it, the report
takes labels, colours and order from it; configuration and the CLI read the same names and knobs
from the methods' settings models (tamer/model_config.py), which this module checks against.

Adding a method: its settings model in tamer/model_config.py, one module here with its class,
one line below, and its defaults in configs/default.yaml where the recipe's are too slow.
"""

from __future__ import annotations

from tamer.model_config import METHOD_SETTINGS
from tasks.methods.base import Context, EvalMethod, Sampling, State, fill
from tasks.methods.dreambooth import DreamBooth
from tasks.methods.dreambooth_lora import DreamBoothLora
from tasks.methods.ours import Ours
from tasks.methods.real import RealImages
from tasks.methods.textual_inversion import TextualInversion

METHODS: dict[str, type[EvalMethod]] = {cls.name: cls for cls in (
    Ours,
    TextualInversion,
    DreamBoothLora,
    DreamBooth,
    RealImages,
)}

if set(METHODS) != set(METHOD_SETTINGS):  # a settings model without its class, or the reverse
    raise ImportError(f"evaluation methods {sorted(METHODS)} do not match their settings "
                      f"{sorted(METHOD_SETTINGS)} (tamer/model_config.py)")

__all__ = ["METHODS", "Context", "EvalMethod", "Sampling", "State", "fill",
           "DreamBooth", "DreamBoothLora", "Ours", "RealImages", "TextualInversion"]
