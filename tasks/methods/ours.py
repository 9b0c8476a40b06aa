"""Ours: zero-shot TamerPipeline; one object-encoder pass per subject, no training."""

from __future__ import annotations

from PIL import Image
from safetensors.torch import save_file

from model.pipeline import TamerPipeline
from model.profiles import device
from model.sampling import use_sampler
from tamer.model_config import OursConfig
from tasks.eval_subjects import Subject
from tasks.methods.base import Context, EvalMethod, State, fill, generator

OBJECT_EMBEDS_FILE = "object_embeds.safetensors"


class Ours(EvalMethod):
    """Encode the first real image once; its object tokens serve every prompt."""

    settings, label, color = OursConfig, "ours (zero-shot)", "tab:red"
    stores = "object tokens"

    def __init__(self, context: Context, config: OursConfig):
        super().__init__(context, config)
        if not context.pipeline_uri:
            raise ValueError("method 'ours' needs a TamerPipeline: no completed training run with an "
                             "exported pipeline; pass a pipeline directory (eval.pipeline / --pipeline)")
        self.pipe = TamerPipeline.from_pretrained(context.pipeline_uri).to(str(device(context.profile)))
        self.pipe.set_progress_bar_config(disable=True)
        use_sampler(self.pipe, context.sampling.scheduler)

    def prepare(self, subject: Subject) -> State:
        embeds = self.pipe.encode_object(subject.images[0])  # (1, K, D)
        path = self.folder(subject) / OBJECT_EMBEDS_FILE
        save_file({"object_embeds": embeds.cpu().contiguous()}, str(path))
        return State(subject, subject.class_noun, path.stat().st_size, {"embeds": embeds})

    def generate(self, state: State, prompt: str, seed: int) -> list[Image.Image]:
        s = self.context.sampling
        return self.pipe(fill(prompt, state.phrase), object_embeds=state.extra["embeds"],
                         num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                         object_guidance_scale=s.object_guidance_scale, generator=generator(seed)).images
