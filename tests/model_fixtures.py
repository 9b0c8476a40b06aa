"""Tiny real components for the model tests, from the `tiny` profile (loaded once per session).

Every factory returns fresh modules (tests install processors and train in place), so tests
never see each other's weights.
"""

from __future__ import annotations

import copy
import functools

import torch

from model.batching import collate
from model.profiles import load_profile, load_role
from model.tamer_model import TamerModel, TamerModelConfig

ROLES = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "clip", "segmentation")


@functools.lru_cache(maxsize=1)
def _loaded() -> dict:
    profile = load_profile("tiny")
    return {role: load_role(profile, role) for role in ROLES}


def tiny_components() -> dict:
    """Fresh copies of: unet, vae, text_encoder, tokenizer, scheduler, clip, image_processor, segmentation."""
    loaded = _loaded()
    out = {role: copy.deepcopy(loaded[role]) for role in ("unet", "vae", "text_encoder", "segmentation")}
    clip, processor = loaded["clip"]
    out["clip"] = copy.deepcopy(clip)
    out["image_processor"] = processor.image_processor
    out["tokenizer"] = loaded["tokenizer"]
    out["scheduler"] = type(loaded["scheduler"]).from_config(loaded["scheduler"].config)
    return out


def tiny_model(segmentation: bool = False, **config) -> TamerModel:
    """A TamerModel on fresh tiny components; `config` overrides TamerModelConfig fields."""
    c = tiny_components()
    segmenter = None
    if segmentation:
        from model.masking import SegmentationMasker

        segmenter = SegmentationMasker(*c["segmentation"], c["image_processor"].image_mean,
                                       c["image_processor"].image_std)
    torch.manual_seed(0)  # the adapter's fresh weights
    return TamerModel.from_components(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"],
                                      c["clip"], c["image_processor"], TamerModelConfig(**config), segmenter)


def synthetic_object(seed: int, size: int) -> torch.Tensor:
    """A coloured square on a grey ground, (3, size, size) in [-1, 1]; seed picks colour and place."""
    g = torch.Generator().manual_seed(seed)
    image = torch.full((3, size, size), 0.0)
    colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
    side = size // 2
    y, x = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
    image[:, y : y + side, x : x + side] = colour
    return image


def make_batch(model: TamerModel, batch_size: int, domain: int | None = None, seed: int = 0) -> dict:
    """A collated batch: synthetic targets, CLIP-sized references (other views), a caption."""
    domain = batch_size if domain is None else domain
    res = model.unet.config.sample_size * model.pipe.vae_scale_factor
    ref = model.object_encoder.image_size
    ids = {key: row[0] for key, row in model.family.tokenize(model.pipe, ["a photo of a square"]).items()}
    examples = []
    for i in range(batch_size):
        reference = None
        if i < domain:
            reference = torch.nn.functional.interpolate(synthetic_object(seed + i + 1000, ref)[None], size=ref)[0]
        examples.append({"pixel_values": synthetic_object(seed + i, res), **ids,
                         "reference_pixel_values": reference, "reference_mask": None})
    return collate(examples)
