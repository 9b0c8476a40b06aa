"""Models the synth-quality benchmark trains from scratch: the attribute oracle (`model.oracle`) and
the in-domain tiny CLIP (contrastive on synth image-caption pairs, saved with `save_pretrained`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

from benchmarks.synthq_world import KEYS, VOCAB, Renders, caption
from model.fit import fit
from model.oracle import AttributeOracle
from model.tiny import ensure_built


def train_oracle(data: Renders, steps: int, batch: int, seed: int, width: int = 24,
                 ) -> tuple[AttributeOracle, float]:
    """Cross-entropy on every attribute head; returns the model and seconds spent."""
    torch.manual_seed(seed)
    oracle = AttributeOracle.for_vocabulary({key: list(VOCAB[key]) for key in KEYS}, width).train()
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(_: int) -> torch.Tensor:
        rows = torch.randint(0, len(data), (batch,), generator=generator)
        return oracle.loss(data.pixels[rows], data.labels[rows])

    seconds = fit(oracle.parameters(), steps, 3e-3, loss_fn, weight_decay=1e-4)
    return oracle.eval(), seconds


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


def clip_pixels(pixels: torch.Tensor, processor: CLIPProcessor) -> torch.Tensor:
    """[-1, 1] pixels already at CLIP's side -> CLIP-normalised pixels (what the processor does)."""
    image = processor.image_processor
    mean = torch.tensor(image.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image.image_std).view(1, 3, 1, 1)
    return ((pixels + 1) / 2 - mean) / std


def train_clip(data: Renders, processor: CLIPProcessor, steps: int, batch: int, seed: int,
               out: Path) -> tuple[CLIPModel, float]:
    """Symmetric InfoNCE on (render, caption) pairs; saved with `save_pretrained` to `out`, so it
    loads through `from_pretrained` like every profile component. Returns (model, seconds)."""
    torch.manual_seed(seed)
    size = data.pixels.shape[-1]
    model = CLIPModel(clip_config(size))
    captions = [caption(data.identity(i), data.scenes[i]) for i in range(len(data))]
    tokens = processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(seed)
    model.train()

    def loss_fn(_: int) -> torch.Tensor:
        rows = torch.randint(0, len(data), (batch,), generator=generator)
        return model(input_ids=tokens.input_ids[rows], attention_mask=tokens.attention_mask[rows],
                     pixel_values=clip_pixels(data.pixels[rows], processor), return_loss=True).loss

    seconds = fit(model.parameters(), steps, 1e-3, loss_fn, weight_decay=0.05)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return CLIPModel.from_pretrained(out).eval(), seconds


@torch.no_grad()
def retrieval_accuracy(model: CLIPModel, processor: CLIPProcessor, data: Renders, n: int = 64) -> float:
    """Image -> caption top-1 among n pairs: a sanity figure that the CLIP learned the world."""
    n = min(n, len(data))
    captions = [caption(data.identity(i), data.scenes[i]) for i in range(n)]
    tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
    images = F.normalize(model.get_image_features(pixel_values=clip_pixels(data.pixels[:n], processor)), dim=-1)
    texts = F.normalize(model.get_text_features(**tokens), dim=-1)
    return float(((images @ texts.T).argmax(1) == torch.arange(n)).float().mean())
