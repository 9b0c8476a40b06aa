"""Batched captions from any transformers image-to-text model (BLIP, BLIP-2, Florence-2, PaliGemma).

Contract: `Captioner(model, processor, prompt=...)` wraps a model loaded by `model.profiles.load_role`
(whose class the profile may set to `transformers.AutoModelForVision2Seq`,
`transformers.AutoModelForCausalLM`, ...). `preprocess` and `generate` are separate so a caller
(or a benchmark) can time or pipeline them apart; `__call__` does both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image


@dataclass(frozen=True)
class GenerationSettings:
    """How captions are decoded; greedy by default because it is deterministic and cheapest."""

    max_new_tokens: int = 30
    num_beams: int = 1
    # Task prompt for models that need one ("<MORE_DETAILED_CAPTION>" for Florence-2,
    # "<image>caption en" for PaliGemma) or a conditional prefix for BLIP ("a photo of").
    prompt: str | None = None


class Captioner:
    """One loaded captioning model: images in, caption strings out, a batch at a time."""

    def __init__(self, model: Any, processor: Any, settings: GenerationSettings | None = None):
        self.model, self.processor = model, processor
        self.settings = settings or GenerationSettings()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    def preprocess(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Processor outputs on the model's device; pixel tensors in the model's dtype."""
        kwargs: dict[str, Any] = {"images": list(images), "return_tensors": "pt"}
        if self.settings.prompt is not None:
            # One prompt per image: processors pair texts with images, they do not broadcast.
            kwargs["text"] = [self.settings.prompt] * len(images)
        inputs = self.processor(**kwargs)
        return {name: value.to(self.device, self.dtype if value.is_floating_point() else None)
                for name, value in inputs.items() if isinstance(value, torch.Tensor)}

    @torch.inference_mode()
    def generate(self, inputs: dict[str, torch.Tensor]) -> list[str]:
        """Captions for preprocessed inputs, with any echoed prompt removed."""
        output = self.model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens,
                                     num_beams=self.settings.num_beams, do_sample=False)
        prompt_ids = inputs.get("input_ids")
        # Decoder-only models (PaliGemma, BLIP-2 OPT) return prompt + continuation.
        if (prompt_ids is not None and output.shape[1] > prompt_ids.shape[1]
                and torch.equal(output[:, :prompt_ids.shape[1]], prompt_ids)):
            output = output[:, prompt_ids.shape[1]:]
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        return [strip_prompt(text, self.settings.prompt) for text in texts]

    def __call__(self, images: Sequence[Image.Image]) -> list[str]:
        return self.generate(self.preprocess(images))


def strip_prompt(text: str, prompt: str | None) -> str:
    """Drop a leading copy of the prompt (BLIP decodes its conditional prefix into the caption).

    Task tokens such as Florence-2's "<CAPTION>" are special tokens and never appear decoded.
    """
    text = " ".join(text.split())
    if prompt:
        plain = " ".join(prompt.split()).lower()
        if plain and text.lower().startswith(plain):
            text = text[len(plain):]
    return text.strip(" ,.:;")
