"""The reference row: the subject's own images, scored against its *other* real images."""

from __future__ import annotations

from PIL import Image

from tamer.model_config import RealImagesConfig
from tasks.eval_subjects import Subject
from tasks.methods.base import EvalMethod, State


class RealImages(EvalMethod):
    """The seed picks one of the subject's real images; nothing is customized, so no cost."""

    settings, label, color = RealImagesConfig, "real images (ceiling)", "black"
    stores = "nothing"
    follows_prompt = False

    def prepare(self, subject: Subject) -> State:
        return State(subject, subject.class_noun, None)

    def generate(self, state: State, prompt: str, seed: int) -> list[Image.Image]:
        images = state.subject.images
        return [images[seed % len(images)]]

    def cost(self, state: State, prepare_s: float, generate_s: float) -> dict[str, float | int | None]:
        return {"prepare_s": None, "generate_s": None, "subject_bytes": None}
