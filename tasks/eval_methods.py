"""The compared methods behind one interface: `prepare(subject) -> state` (everything a method
does once per subject, timed as its customization cost), `generate(state, prompt, seed) ->
images` (timed per image). A state records the bytes the method stores per subject.

- ours: zero-shot TamerPipeline, one object-encoder pass per subject;
- textual_inversion / dreambooth_lora: per-subject optimization on the profile's frozen base
  model, saved in diffusers' formats and loaded back into one shared base pipeline;
- real: the subject's own images (the metrics' ceiling), compared with the *other* real images.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image
from safetensors.torch import save_file

from model.dreambooth_lora import (DreamBoothLoraConfig, load_lora, save_lora, subject_phrase,
                                   train_dreambooth_lora)
from model.finetune import base_pipeline
from model.pipeline import TamerPipeline
from model.textual_inversion import TextualInversionConfig, save_learned_embeds, train_textual_inversion
from tasks.eval_subjects import Subject

OBJECT_EMBEDS_FILE = "object_embeds.safetensors"


@dataclass
class State:
    subject: Subject
    phrase: str  # the words that stand for the subject in a prompt ("{}")
    bytes_stored: int | None  # per-subject artifact on disk; None: nothing to customize
    extra: dict[str, Any] = field(default_factory=dict)


class Method(Protocol):
    name: str
    follows_prompt: bool  # False for real images: they are not scored against prompts

    def prepare(self, subject: Subject) -> State: ...

    def generate(self, state: State, prompt: str, seed: int) -> list[Image.Image]: ...


@dataclass(frozen=True)
class Sampling:
    """Sampling settings every generating method shares, so the comparison is like for like."""

    steps: int
    guidance_scale: float
    object_guidance_scale: float
    scheduler: str  # "ddim", or "default" (the pipeline's own)


def fill(prompt: str, phrase: str) -> str:
    return re.sub(r"\s+", " ", prompt.replace("{}", phrase)).strip()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)  # CPU: the same images on any device


def _set_scheduler(pipe, sampling: Sampling) -> None:
    if sampling.scheduler == "ddim":
        from diffusers import DDIMScheduler

        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)


class Ours:
    """Zero-shot: encode the first real image once; its object tokens serve every prompt."""

    name, follows_prompt = "ours", True

    def __init__(self, pipeline_dir: str, sampling: Sampling, work_dir: Path, device: str):
        self.pipe = TamerPipeline.from_pretrained(pipeline_dir).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        _set_scheduler(self.pipe, sampling)
        self.sampling, self.work_dir = sampling, work_dir

    def prepare(self, subject: Subject) -> State:
        embeds = self.pipe.encode_object(subject.images[0])  # (1, K, D)
        path = self.work_dir / self.name / subject.name / OBJECT_EMBEDS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"object_embeds": embeds.cpu().contiguous()}, str(path))
        return State(subject, subject.class_noun, path.stat().st_size, {"embeds": embeds})

    def generate(self, state: State, prompt: str, seed: int) -> list[Image.Image]:
        s = self.sampling
        return self.pipe(fill(prompt, state.phrase), object_embeds=state.extra["embeds"],
                         num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                         object_guidance_scale=s.object_guidance_scale, generator=_generator(seed)).images


class _Baseline:
    """A per-subject method on the shared base pipeline; one subject's weights loaded at a time."""

    def __init__(self, profile, sampling: Sampling, work_dir: Path):
        self.pipe = base_pipeline(profile)
        self.train_scheduler = self.pipe.scheduler  # training noises with the profile's schedule
        _set_scheduler(self.pipe, sampling)
        self.sampling, self.work_dir = sampling, work_dir
        self.loaded: str | None = None

    def generate(self, state: State, prompt: str, seed: int) -> list[Image.Image]:
        s = self.sampling
        return self.pipe(fill(prompt, state.phrase), num_inference_steps=s.steps,
                         guidance_scale=s.guidance_scale, generator=_generator(seed)).images

    def folder(self, subject: Subject) -> Path:
        path = self.work_dir / self.name / subject.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def trainer(self, **swap) -> Any:
        """A pipeline with the training scheduler (and any swapped components) on shared modules."""
        return type(self.pipe)(**{**self.pipe.components, "scheduler": self.train_scheduler, **swap},
                               requires_safety_checker=False)  # tiny/base SD has none


class TextualInversion(_Baseline):
    name, follows_prompt = "textual_inversion", True

    def __init__(self, profile, sampling: Sampling, work_dir: Path, config: TextualInversionConfig):
        super().__init__(profile, sampling, work_dir)
        self.config = config

    def prepare(self, subject: Subject) -> State:
        token = f"<{subject.name}>"
        # Train on private copies of the text side, so the shared pipeline stays the base model.
        trainer = self.trainer(text_encoder=copy.deepcopy(self.pipe.text_encoder),
                               tokenizer=copy.deepcopy(self.pipe.tokenizer))
        embeds = train_textual_inversion(trainer, subject.images, token, subject.class_noun, self.config)
        path = save_learned_embeds(self.folder(subject), token, embeds)
        if self.loaded:
            self.pipe.unload_textual_inversion(self.loaded)
        self.pipe.load_textual_inversion(str(path), token=token)
        self.loaded = token
        return State(subject, token, path.stat().st_size)


class DreamBoothLora(_Baseline):
    name, follows_prompt = "dreambooth_lora", True

    def __init__(self, profile, sampling: Sampling, work_dir: Path, config: DreamBoothLoraConfig):
        super().__init__(profile, sampling, work_dir)
        self.config = config

    def prepare(self, subject: Subject) -> State:
        if self.loaded:
            self.pipe.delete_adapters(self.loaded)
        adapter = re.sub(r"\W", "_", subject.name)
        trainer = self.trainer()
        weights = train_dreambooth_lora(trainer, subject.images, subject.class_noun, self.config, adapter)
        self.pipe.unet.delete_adapters(adapter)  # back to the base UNet; reload from the saved file
        path = save_lora(self.pipe, self.folder(subject), weights)
        load_lora(self.pipe, path, adapter)
        self.loaded = adapter
        return State(subject, subject_phrase(self.config, subject.class_noun), path.stat().st_size)


class RealImages:
    """The reference row: the seed picks one of the subject's real images."""

    name, follows_prompt = "real", False

    def prepare(self, subject: Subject) -> State:
        return State(subject, subject.class_noun, None)

    def generate(self, state: State, prompt: str, seed: int) -> list[Image.Image]:
        images = state.subject.images
        return [images[seed % len(images)]]
