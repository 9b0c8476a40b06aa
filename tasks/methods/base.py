"""What every evaluation method is: one class that owns its name and knobs (through its settings
model in tamer/model_config.py), its report label and colour, what it stores per subject, its
cost accounting and its behaviour: `prepare(subject) -> State` (everything done once per
subject, timed as its customization cost), `generate(state, prompt, seed) -> images` (timed
per image).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from tamer.model_config import MethodSettings
from tasks.eval_subjects import Subject


@dataclass(frozen=True)
class Sampling:
    """Sampling settings every generating method shares, so the comparison is like for like."""

    steps: int
    guidance_scale: float
    object_guidance_scale: float
    scheduler: str  # `model.sampling`: "ddim", or "default" (the pipeline's own)


@dataclass(frozen=True)
class Context:
    """What a method is built from: the same for every method, whatever it uses of it."""

    profile: Any  # model.profiles.Profile
    sampling: Sampling
    work_dir: Path  # per-subject artifacts go under <work_dir>/<method>/<subject>/
    pipeline_uri: str | None = None  # the TamerPipeline under evaluation (ours)


@dataclass
class State:
    subject: Subject
    phrase: str  # the words that stand for the subject in a prompt ("{}")
    bytes_stored: int | None  # per-subject artifact on disk; None: nothing to customize
    extra: dict[str, Any] = field(default_factory=dict)


class EvalMethod:
    """Base of every method; a subclass sets `settings` (its name comes from it), `label`,
    `color` and `stores`, and implements `prepare` and `generate`."""

    settings: ClassVar[type[MethodSettings]]
    name: ClassVar[str]  # settings.method: the key of config's eval.methods and of eval_results
    label: ClassVar[str]  # the report's name for it
    color: ClassVar[str]  # matplotlib colour in the report's plots
    stores: ClassVar[str]  # what it keeps per subject, as the report's cost table says
    follows_prompt: ClassVar[bool] = True  # False for real images: not scored against prompts

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settings" in cls.__dict__:
            cls.name = cls.settings.method

    def __init__(self, context: Context, config: MethodSettings):
        self.context, self.config = context, config

    def prepare(self, subject: Subject) -> State:
        raise NotImplementedError

    def generate(self, state: State, prompt: str, seed: int) -> list[Image.Image]:
        raise NotImplementedError

    def cost(self, state: State, prepare_s: float, generate_s: float) -> dict[str, float | int | None]:
        """The `eval_results` cost columns of one image: seconds to customize to the subject,
        to generate the image, and bytes stored per subject."""
        return {"prepare_s": prepare_s, "generate_s": generate_s, "subject_bytes": state.bytes_stored}

    def folder(self, subject: Subject) -> Path:
        path = self.context.work_dir / self.name / subject.name
        path.mkdir(parents=True, exist_ok=True)
        return path


def fill(prompt: str, phrase: str) -> str:
    return re.sub(r"\s+", " ", prompt.replace("{}", phrase)).strip()


def generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)  # CPU: the same images on any device


def folder_bytes(path: Path) -> int:
    """Bytes of every file under `path`: what a method keeps per subject."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
