"""Models the synth-quality benchmark trains from scratch: the attribute oracle (`model.oracle`) and
the in-domain tiny CLIP (contrastive on synth image-caption pairs, saved with `save_pretrained`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

from model import role_training
from model.oracle import AttributeOracle
from model.role_training import processor_pixels
from model.tiny import ensure_built
from tamer.synth_world import KEYS, VOCAB, Renders, caption


def train_oracle(data: Renders, steps: int, batch: int, seed: int, width: int = 24,
                 ) -> tuple[AttributeOracle, float]:
    """`model.role_training.train_oracle` on every attribute of the world."""
    vocabulary = {key: list(VOCAB[key]) for key in KEYS}
    return role_training.train_oracle(data.pixels, data.labels, vocabulary, steps, batch, seed, width)


def accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Per-attribute exact-match rate of (N, len(KEYS)) index tensors."""
    return {key: float((predicted[:, k] == truth[:, k]).float().mean()) for k, key in enumerate(KEYS)}


# ---- the in-domain CLIP ----

def clip_config(size: int) -> CLIPConfig:
    """Small enough for minutes of CPU training; the text width is also the UNet's
    cross-attention width, since the diffusion model reuses this text tower."""
    vision = dict(image_size=size, patch_size=4, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=3, num_attention_heads=4)
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=77)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def clip_processor(size: int) -> CLIPProcessor:
    """The tiny profile's processor (real CLIP BPE tokenizer), resized to `size`."""
    processor = CLIPProcessor.from_pretrained(ensure_built("clip"))
    processor.image_processor.size = {"shortest_edge": size}
    processor.image_processor.crop_size = {"height": size, "width": size}
    return processor


def train_clip(data: Renders, processor: CLIPProcessor, steps: int, batch: int, seed: int,
               out: Path) -> tuple[CLIPModel, float]:
    """`model.role_training.train_clip` on (render, caption) pairs, saved with `save_pretrained`
    to `out` so it loads through `from_pretrained` like every profile component."""
    captions = [caption(data.identity(i), data.scenes[i]) for i in range(len(data))]
    model, seconds = role_training.train_clip(clip_config(data.pixels.shape[-1]), processor, data.pixels, captions,
                                              steps, batch, seed)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return CLIPModel.from_pretrained(out).eval(), seconds


@torch.no_grad()
def retrieval_accuracy(model: CLIPModel, processor: CLIPProcessor, data: Renders, n: int = 64) -> float:
    """Image -> caption top-1 among n pairs: a sanity figure that the CLIP learned the world."""
    n = min(n, len(data))
    captions = [caption(data.identity(i), data.scenes[i]) for i in range(n)]
    tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
    inputs = processor_pixels(data.pixels[:n], processor.image_processor)
    images = F.normalize(model.get_image_features(pixel_values=inputs), dim=-1)
    texts = F.normalize(model.get_text_features(**tokens), dim=-1)
    return float(((images @ texts.T).argmax(1) == torch.arange(n)).float().mean())
