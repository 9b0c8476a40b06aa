"""Base-model families: everything that differs between Stable Diffusion 1.x/2.x and SDXL where
prompts become UNet conditioning, in one place.

SD has one tokenizer and text encoder and conditions the UNet on its last hidden states. SDXL
has two (CLIP ViT-L and OpenCLIP bigG), conditions on their penultimate hidden states side by
side, and adds "added conditioning" to the timestep embedding: the second encoder's pooled,
projected embedding and six size/crop numbers ("time ids"). Everything else (the object
attention, the VAE, the noise schedule, the training loop) is family-blind: it asks the family
for a `Conditioning` and passes `conditioning.unet_kwargs()` to the UNet.

The family of a pipeline, profile or model is read from what it holds: a second text encoder
means SDXL. Adding a family = one class here and one line in `FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import diffusers
import torch


@dataclass
class Conditioning:
    """What the UNet is conditioned on: `states` (B, L, D) for cross-attention and, for families
    with added conditioning, `added` = {"text_embeds": (B, P), "time_ids": (B, 6)}."""

    states: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    def unet_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"encoder_hidden_states": self.states}
        if self.added is not None:
            kwargs["added_cond_kwargs"] = self.added
        return kwargs

    def map(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Conditioning:
        """`function` applied to the states and to each added tensor (dtype, repeat, rows)."""
        return Conditioning(function(self.states),
                            None if self.added is None else {k: function(v) for k, v in self.added.items()})

    def with_tokens(self, tokens: torch.Tensor) -> Conditioning:
        """Extra cross-attention tokens (B, K, D) after the text's (the object tokens)."""
        return Conditioning(torch.cat([self.states, tokens], dim=1), self.added)

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        """Rows of several conditionings stacked (guidance branches)."""
        added = None if parts[0].added is None else {
            key: torch.cat([p.added[key] for p in parts]) for key in parts[0].added}
        return Conditioning(torch.cat([p.states for p in parts]), added)


def token_ids(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """(B, L) ids padded to the tokenizer's max length, as every SD-family text encoder expects."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


class BaseFamily:
    """One base-model family. `text_parts`: (tokenizer, text encoder, ids key) per text tower,
    named as the family's diffusers pipeline names its components."""

    name: str
    pipeline_class: str  # in diffusers; resolved on use, so tokenizing needs no pipeline import
    text_parts: tuple[tuple[str, str, str], ...]
    pipeline_options: dict[str, Any] = {}

    def tokenize(self, owner, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """{ids key: (B, L)} for each text tower of `owner` (a pipeline or model holding them)."""
        return {key: token_ids(getattr(owner, tokenizer), prompts) for tokenizer, _, key in self.text_parts}

    def encode(self, owner, ids: dict[str, torch.Tensor], size: int) -> Conditioning:
        """Token ids -> conditioning for images `size` px square."""
        raise NotImplementedError

    def encode_prompts(self, owner, prompts: Sequence[str], size: int) -> Conditioning:
        return self.encode(owner, self.tokenize(owner, prompts), size)

    def text_towers(self, owner) -> list[tuple[Any, Any]]:
        """(tokenizer, text encoder) of each text tower of `owner`."""
        return [(getattr(owner, tokenizer), getattr(owner, encoder)) for tokenizer, encoder, _ in self.text_parts]

    def base_pipeline(self, components: dict[str, Any]):
        """The family's diffusers text-to-image pipeline over `components` (no safety checker,
        no watermark, nothing downloaded), sampling with the scheduler as saved: the
        constructor turns `clip_sample` off, right for SD's latents, whose range is open, but a
        pixel-space base's x0 estimates then run to +-200 and sample saturated noise."""
        saved = components["scheduler"]
        config = dict(saved.config)  # the constructor rewrites the scheduler's config in place
        pipe = getattr(diffusers, self.pipeline_class)(**components, **self.pipeline_options)
        pipe.scheduler = type(saved).from_config(config)
        return pipe

    def components(self, pipe) -> dict[str, Any]:
        """The components of a pipeline that its family's base pipeline takes."""
        return {name: getattr(pipe, name) for name in self.component_names}

    @property
    def component_names(self) -> tuple[str, ...]:
        return ("vae", "unet", "scheduler", *(n for part in self.text_parts for n in part[:2]))


class StableDiffusion(BaseFamily):
    name = "sd"
    pipeline_class = "StableDiffusionPipeline"
    text_parts = (("tokenizer", "text_encoder", "input_ids"),)
    pipeline_options = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    def encode(self, owner, ids: dict[str, torch.Tensor], size: int) -> Conditioning:
        encoder = owner.text_encoder
        return Conditioning(encoder(ids["input_ids"].to(encoder.device))[0])


class StableDiffusionXL(BaseFamily):
    name = "sdxl"
    pipeline_class = "StableDiffusionXLPipeline"
    text_parts = (("tokenizer", "text_encoder", "input_ids"), ("tokenizer_2", "text_encoder_2", "input_ids_2"))
    pipeline_options = {"image_encoder": None, "feature_extractor": None, "add_watermarker": False}

    def encode(self, owner, ids: dict[str, torch.Tensor], size: int) -> Conditioning:
        """Penultimate hidden states of both encoders side by side; the second one's projected
        pooled embedding and time ids (original size, crop (0, 0), target size) as added
        conditioning, as diffusers' SDXL pipeline and training script build them."""
        first, second = owner.text_encoder, owner.text_encoder_2
        out_1 = first(ids["input_ids"].to(first.device), output_hidden_states=True)
        out_2 = second(ids["input_ids_2"].to(second.device), output_hidden_states=True)
        states = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)  # (B, L, D1 + D2)
        pooled = out_2.text_embeds  # (B, P)
        time_ids = torch.tensor([size, size, 0, 0, size, size], dtype=pooled.dtype, device=pooled.device)
        return Conditioning(states, {"text_embeds": pooled, "time_ids": time_ids.expand(len(pooled), -1)})


FAMILIES: dict[str, BaseFamily] = {family.name: family for family in (StableDiffusion(), StableDiffusionXL())}


def family_of(owner) -> BaseFamily:
    """The family of a pipeline or model: SDXL when it holds a second text encoder."""
    return FAMILIES["sdxl" if getattr(owner, "text_encoder_2", None) is not None else "sd"]
