"""Pixel-space diffusion for the synth-quality benchmark, trained here through the stage code
paths: the base model (`model.pixel_base`, the synth profile's recipe) on the world's captions,
ours with `TamerModel.training_step` on `JointBatchPolicy` + `collate` batches, Textual Inversion
with `model.textual_inversion`, sampling with `TamerPipeline` and diffusers'
`StableDiffusionPipeline`.
"""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPModel

from model.base_family import token_ids
from model.batching import JointBatchPolicy, collate, cross_reference
from model.fit import fit
from model.pixel_base import PassThroughVAE, scheduler, sd_pipeline, train_base
from model.role_training import processor_pixels
from model.tamer_model import TamerModel, TamerModelConfig
from model.textual_inversion import TextualInversionConfig, train_textual_inversion
from tamer.synth_world import Renders, caption, class_prompt, object_prompt


def train_world_base(data: Renders, text_encoder, tokenizer, steps: int, batch: int, seed: int, on_ema=None,
                     every: int = 0):
    """`model.pixel_base.train_base` on the world's full captions and class prompts."""
    rows = range(len(data))
    return train_base(data.pixels, [caption(data.identity(i), data.scenes[i]) for i in rows],
                      [class_prompt(data.identity(i), data.scenes[i]) for i in rows], text_encoder, tokenizer,
                      steps, batch, seed, on_ema, every)


VARIANTS: dict[str, dict] = {
    "ours": {},  # the full recipe: whole network, cross-reference, masking, identity loss
    "ours_no_crossref": {"cross_reference": False},
    "ours_no_idloss": {"identity_loss_weight": 0.0},
    "ours_adapter_only": {"trainable": "adapter"},
    "ours_no_masking": {"masking": False},  # background patches reach the object tokens
}


def train_ours(data: Renders, base_unet, text_encoder, tokenizer, clip: CLIPModel, processor,
               variant: str, steps: int, batch: int, seed: int) -> tuple[TamerModel, float]:
    """One recipe variant fine-tuned from (a copy of) the base, with the frozen in-domain CLIP as
    the object encoder. Domain rows: "a <obj> star, <scene>" with a reference view; general rows:
    full captions, no object (regularized joint training)."""
    options = dict(VARIANTS[variant])
    use_cross_reference = options.pop("cross_reference", True)
    config = TamerModelConfig(**options)
    torch.manual_seed(seed)
    model = TamerModel.from_components(copy.deepcopy(base_unet), PassThroughVAE(), text_encoder, tokenizer,
                                       scheduler(), clip, processor.image_processor, config)
    model.train()
    views = {k: (data.subject == k).nonzero().squeeze(1).tolist() for k in range(len(data.subjects))}
    policy = JointBatchPolicy(batch, config.domain_ratio, seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)

    def example(pool: str, index: int) -> dict:
        if pool == "general":
            row = index
            return {"pixel_values": data.pixels[row], "reference_pixel_values": None, "reference_mask": None,
                    "input_ids": token_ids(tokenizer, [caption(data.identity(row), data.scenes[row])])[0]}
        row = index
        own = views[int(data.subject[row])]
        ref = own[cross_reference(len(own), own.index(row), rng)] if use_cross_reference else row
        prompt = object_prompt(data.identity(row), data.scenes[row])
        return {"pixel_values": data.pixels[row], "input_ids": token_ids(tokenizer, [prompt])[0],
                "reference_pixel_values": processor_pixels(data.pixels[ref:ref + 1], processor.image_processor)[0],
                "reference_mask": data.masks[ref]}

    def step_fn(step: int) -> torch.Tensor:
        plan = policy.indices(step, len(data), len(data))
        return model.training_step(collate([example(pool, i) for pool, i in plan]), generator)["total"]

    seconds = fit(model.trainable_parameters(), steps, 5e-4, step_fn, schedule="warmup", clip_norm=1.0)
    return model.train(False), seconds


def train_ti(base_unet, text_encoder, tokenizer, images: list, token: str, initializer: str,
             config: TextualInversionConfig) -> tuple[StableDiffusionPipeline, torch.Tensor, float]:
    """Textual Inversion of one object on the base model, with its own tokenizer/text-encoder
    copies; returns a pipeline that knows `token`, the learned embeds and seconds spent."""
    start = time.perf_counter()
    pipe = SimpleNamespace(unet=base_unet, vae=PassThroughVAE(), text_encoder=copy.deepcopy(text_encoder),
                           tokenizer=copy.deepcopy(tokenizer), scheduler=scheduler(), vae_scale_factor=1)
    (embeds,) = train_textual_inversion(pipe, images, token, initializer, config)  # one text encoder
    base_unet.requires_grad_(False)
    seconds = time.perf_counter() - start
    return sd_pipeline(base_unet, pipe.text_encoder.eval(), pipe.tokenizer), embeds, seconds
