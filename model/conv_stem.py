"""A convolutional stem for the small ViT image towers: a few 3x3 convolutions down to the token
grid in place of the patch embedding's single 4x4 projection (Xiao et al. 2021, "Early
convolutions help transformers see better").

Why: on the synth renders the oracle's CNN reads shape 0.95 after 1,000 steps where a 4 px-patch
ViT is still at chance (README, "Why the ViT roles miss shape"): an outline is local structure
across patch borders, which convolutions see from the first step.

The stem is described by the vision config's `conv_stem` (the channels of its convolutions; the
library's configs keep and save unknown fields), so a folder loads through the profile's
`from_pretrained` path with `class_name: model.conv_stem.ConvStemCLIPModel` (or the BLIP or
ViT one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import (BlipConfig, BlipForConditionalGeneration, CLIPConfig, CLIPModel, CLIPVisionConfig,
                          CLIPVisionModelWithProjection, PretrainedConfig, ViTConfig, ViTModel)
# A pipeline saving a class of this module (our model's object encoder) records the module as the
# component's library; loading it back, diffusers finds its loader by looking this name up here.
from transformers import PreTrainedModel  # noqa: F401


class ConvStem(nn.Module):
    """(B, 3, S, S) -> (B, width, S/patch, S/patch), as the patch embedding's Conv2d returns:
    a stride-1 conv, then stride-2 convs until the grid is the patches', each with batch norm
    and ReLU, then a 1x1 projection to the ViT's width."""

    def __init__(self, width: int, patch: int, channels: Sequence[int]):
        super().__init__()
        downsamples = round(math.log2(patch))
        if 2 ** downsamples != patch or len(channels) != downsamples + 1:
            raise ValueError(f"a conv stem for {patch} px patches needs {downsamples + 1} channel counts, "
                             f"got {list(channels)}")
        layers, before = [], 3
        for i, after in enumerate(channels):
            layers += [nn.Conv2d(before, after, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(after), nn.ReLU()]
            before = after
        self.convs = nn.Sequential(*layers)
        self.projection = nn.Conv2d(before, width, 1)

    @property
    def weight(self) -> torch.Tensor:
        """The library's embeddings read `patch_embedding.weight.dtype` to cast the pixels, and
        its weight init draws `patch_embedding.weight`: the projection answers for the stem."""
        return self.projection.weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(self.convs(pixels))


def install_conv_stem(embeddings: nn.Module, vision_config: PretrainedConfig) -> None:
    """Replace `embeddings.patch_embedding` (CLIP's or BLIP's vision embeddings) by the stem the
    config names; a config without `conv_stem` keeps the patch embedding."""
    channels = getattr(vision_config, "conv_stem", None)
    if channels:
        embeddings.patch_embedding = ConvStem(vision_config.hidden_size, vision_config.patch_size, channels)


class ConvStemViTModel(ViTModel):
    """ViTModel (the `dino` role) whose patch embedding's projection is the stem: the library's
    `ViTPatchEmbeddings` keeps its size checks and flattens the stem's grid as it did the conv's."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.embeddings.patch_embeddings.projection = ConvStem(config.hidden_size, config.patch_size,
                                                               config.conv_stem)


class ConvStemCLIPModel(CLIPModel):
    """CLIPModel whose image tower starts with `install_conv_stem`."""

    def __init__(self, config):
        super().__init__(config)
        install_conv_stem(self.vision_model.embeddings, config.vision_config)


class ConvStemCLIPVisionModelWithProjection(CLIPVisionModelWithProjection):
    """CLIP's image half alone (the object encoder's tower, saved in a pipeline) with the stem."""

    def __init__(self, config):
        super().__init__(config)
        install_conv_stem(self.vision_model.embeddings, config)


class ConvStemBlipForConditionalGeneration(BlipForConditionalGeneration):
    """BLIP's captioner whose image tower starts with `install_conv_stem`."""

    def __init__(self, config):
        super().__init__(config)
        install_conv_stem(self.vision_model.embeddings, config.vision_config)


def clip_class(config: CLIPConfig) -> type[CLIPModel]:
    """The class that builds and loads a CLIP of this config: the library's, unless it has a stem."""
    return ConvStemCLIPModel if getattr(config.vision_config, "conv_stem", None) else CLIPModel


def vision_tower_class(config: CLIPVisionConfig) -> type[CLIPVisionModelWithProjection]:
    """As `clip_class`, for CLIP's image half alone."""
    return ConvStemCLIPVisionModelWithProjection if getattr(config, "conv_stem", None) else CLIPVisionModelWithProjection


def captioner_class(config: BlipConfig) -> type[BlipForConditionalGeneration]:
    """As `clip_class`, for BLIP's captioner."""
    stem = getattr(config.vision_config, "conv_stem", None)
    return ConvStemBlipForConditionalGeneration if stem else BlipForConditionalGeneration


def vit_class(config: ViTConfig) -> type[ViTModel]:
    """As `clip_class`, for the `dino` role's ViT."""
    return ConvStemViTModel if getattr(config, "conv_stem", None) else ViTModel


def load_vit(folder: str | Path) -> ViTModel:
    """A ViT folder written here (the `dino` role), with or without a stem."""
    return vit_class(ViTConfig.from_pretrained(folder)).from_pretrained(folder, use_safetensors=True)


def load_clip(folder: str | Path) -> CLIPModel:
    """A CLIP folder written here, with or without a stem (its config says which)."""
    return clip_class(CLIPConfig.from_pretrained(folder)).from_pretrained(folder, use_safetensors=True)


def load_captioner(folder: str | Path) -> BlipForConditionalGeneration:
    """A BLIP captioner folder written here, with or without a stem."""
    return captioner_class(BlipConfig.from_pretrained(folder)).from_pretrained(folder, use_safetensors=True)
