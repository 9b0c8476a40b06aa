"""The per-subject optimization methods' common ground: the profile's frozen base pipeline,
shared by every subject (one subject's weights loaded at a time), sampled like every method."""

from __future__ import annotations

from typing import Any

from PIL import Image

from model.base_family import family_of
from model.finetune import base_pipeline
from model.sampling import use_sampler
from tamer.model_config import MethodSettings
from tasks.methods.base import Context, EvalMethod, State, fill, generator


class OnBasePipeline(EvalMethod):
    def __init__(self, context: Context, config: MethodSettings):
        super().__init__(context, config)
        self.pipe = base_pipeline(context.profile)
        self.train_scheduler = self.pipe.scheduler  # training noises with the profile's schedule
        use_sampler(self.pipe, context.sampling.scheduler)
        self.loaded: str | None = None

    def generate(self, state: State, prompt: str, seed: int) -> list[Image.Image]:
        s = self.context.sampling
        return self.pipe(fill(prompt, state.phrase), num_inference_steps=s.steps,
                         guidance_scale=s.guidance_scale, generator=generator(seed)).images

    def trainer(self, **swap: Any) -> Any:
        """A pipeline with the training scheduler (and any swapped components) on shared modules."""
        family = family_of(self.pipe)
        return family.base_pipeline({**family.components(self.pipe), "scheduler": self.train_scheduler, **swap})
