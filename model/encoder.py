"""Object encoder: a frozen CLIP vision tower gives patch tokens and a pooled embedding; a
trainable projection turns the (masked) patch tokens into K object tokens of the UNet's
cross-attention width.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPImageProcessor, CLIPModel, CLIPVisionModelWithProjection

from model.conv_stem import vision_tower_class


def vision_tower_from_clip(clip: CLIPModel) -> CLIPVisionModelWithProjection:
    """The image half of a CLIPModel as a stand-alone model (same weights, no text tower)."""
    config = copy.deepcopy(clip.config.vision_config)
    config.projection_dim = clip.config.projection_dim
    tower = vision_tower_class(config)(config)
    tower.vision_model.load_state_dict(clip.vision_model.state_dict())
    tower.visual_projection.load_state_dict(clip.visual_projection.state_dict())
    return tower.to(device=clip.device, dtype=clip.dtype)


class ObjectEncoder(nn.Module):
    """Frozen CLIP vision tower. Its pooled embedding is also the identity loss's feature space."""

    def __init__(self, tower: CLIPVisionModelWithProjection, image_processor: CLIPImageProcessor):
        super().__init__()
        self.tower = tower.requires_grad_(False).eval()
        self.image_processor = image_processor
        # CLIP's normalisation, as buffers so they follow .to(device)
        self.register_buffer("mean", torch.tensor(image_processor.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_processor.image_std).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return self.tower.config.image_size

    @property
    def patch_size(self) -> int:
        return self.tower.config.patch_size

    @property
    def hidden_size(self) -> int:
        return self.tower.config.hidden_size

    def train(self, mode: bool = True) -> ObjectEncoder:
        """The tower stays in eval mode: it is frozen, and dropout would make targets noisy."""
        super().train(mode)
        self.tower.eval()
        return self

    def preprocess(self, images: list) -> torch.Tensor:
        """PIL images (or arrays) -> CLIP pixel values (B, 3, h, w) on the tower's device."""
        pixels = self.image_processor(images=images, return_tensors="pt").pixel_values
        return pixels.to(device=self.mean.device, dtype=self.tower.dtype)

    def normalize_decoded(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable CLIP preprocessing of VAE output in [-1, 1] (B, 3, H, W) -> (B, 3, h, w)."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        images = (images + 1) / 2  # [-1, 1] -> [0, 1], CLIP's input range before normalisation
        return (images - self.mean) / self.std

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP pixels (B, 3, h, w) -> patch tokens (B, P, Hv) without CLS, pooled embeds (B, E)."""
        out = self.tower(pixel_values=pixel_values.to(self.tower.dtype))
        patch_tokens = out.last_hidden_state[:, 1:]  # (B, P, Hv): drop CLS
        return patch_tokens, out.image_embeds  # (B, P, Hv), (B, E)


class ObjectProjection(nn.Module):
    """Patch tokens (B, P, Hv) -> K object tokens (B, K, D) by attention pooling.

    K learned queries attend over the projected patches (one head: the tokens are few and the
    UNet's own cross-attention already splits heads), so K is free of the patch count and
    background patches zeroed by masking carry no image content into any token.
    """

    def __init__(self, vision_hidden_size: int, cross_attention_dim: int, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.norm_in = nn.LayerNorm(vision_hidden_size)
        self.proj_in = nn.Linear(vision_hidden_size, cross_attention_dim)
        # small init so fresh queries start near-isotropic, like token embeddings
        self.queries = nn.Parameter(torch.randn(num_tokens, cross_attention_dim) / math.sqrt(cross_attention_dim))
        self.norm_out = nn.LayerNorm(cross_attention_dim)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        patches = self.proj_in(self.norm_in(patch_tokens))  # (B, P, D)
        queries = self.queries.unsqueeze(0).expand(patches.shape[0], -1, -1)  # (B, K, D)
        pooled = F.scaled_dot_product_attention(queries, patches, patches)  # (B, K, D)
        return self.norm_out(pooled + queries)  # (B, K, D)
