"""Trainers for the roles the `synth` profile learns from labelled renders: the attribute
oracle, CLIP (contrastive on render-caption pairs), the captioner (BLIP architecture, on
ground-truth descriptions) and the segmentation model (Segformer, on the renders' masks).

Inputs are tensors, not a world: pixels (N, 3, S, S) in [-1, 1], and per row a caption or a
mask. Each trainer returns the model in eval mode and the seconds spent; the
models are ordinary transformers classes, so `save_pretrained` + the profile's `from_pretrained`
load them like any checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (BlipConfig, BlipForConditionalGeneration, CLIPConfig, CLIPModel, SegformerConfig,
                          SegformerForSemanticSegmentation)

from model.fit import fit
from model.oracle import AttributeOracle


def processor_pixels(pixels: torch.Tensor, image_processor) -> torch.Tensor:
    """[-1, 1] pixels already at the model's side -> what `image_processor` would feed it."""
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return ((pixels + 1) / 2 - mean) / std


def _rows(n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=generator)


def train_oracle(pixels: torch.Tensor, labels: torch.Tensor, vocabulary: dict[str, list[str]], steps: int,
                 batch: int, seed: int, width: int = 24) -> tuple[AttributeOracle, float]:
    """Cross-entropy on every attribute head; `labels` (N, len(vocabulary)) are value indices."""
    torch.manual_seed(seed)
    oracle = AttributeOracle.for_vocabulary(vocabulary, width).train()
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(_: int) -> torch.Tensor:
        rows = _rows(len(labels), batch, generator)
        return oracle.loss(pixels[rows], labels[rows])

    seconds = fit(oracle.parameters(), steps, 3e-3, loss_fn, weight_decay=1e-4)
    return oracle.eval(), seconds


def train_clip(config: CLIPConfig, processor, pixels: torch.Tensor, captions: Sequence[str], steps: int,
               batch: int, seed: int) -> tuple[CLIPModel, float]:
    """Symmetric InfoNCE on (render, caption) pairs."""
    torch.manual_seed(seed)
    model = CLIPModel(config).train()
    tokens = processor.tokenizer(list(captions), padding=True, truncation=True, return_tensors="pt")
    inputs = processor_pixels(pixels, processor.image_processor)
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(_: int) -> torch.Tensor:
        rows = _rows(len(inputs), batch, generator)
        return model(input_ids=tokens.input_ids[rows], attention_mask=tokens.attention_mask[rows],
                     pixel_values=inputs[rows], return_loss=True).loss

    seconds = fit(model.parameters(), steps, 1e-3, loss_fn, weight_decay=0.05)
    return model.eval(), seconds


def train_captioner(config: BlipConfig, processor, pixels: torch.Tensor, captions: Sequence[str],
                    steps: int, batch: int, lr: float, seed: int) -> tuple[BlipForConditionalGeneration, float]:
    """Teacher-forced captioning loss. The first token is BLIP's [DEC] (bos), as at generation
    time (`generate` starts from it); padding is ignored by the loss."""
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).train()
    tokens = processor.tokenizer(list(captions), padding=True, truncation=True, max_length=48,
                                 return_tensors="pt")
    ids = tokens.input_ids.clone()
    ids[:, 0] = config.text_config.bos_token_id
    labels = ids.masked_fill(tokens.attention_mask == 0, -100)
    inputs = processor_pixels(pixels, processor.image_processor)
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(_: int) -> torch.Tensor:
        rows = _rows(len(ids), batch, generator)
        return model(pixel_values=inputs[rows], input_ids=ids[rows],
                     attention_mask=tokens.attention_mask[rows], labels=labels[rows]).loss

    seconds = fit(model.parameters(), steps, lr, loss_fn)
    return model.eval(), seconds


def train_segmentation(config: SegformerConfig, image_processor, pixels: torch.Tensor, masks: torch.Tensor,
                       steps: int, batch: int, lr: float, seed: int,
                       ) -> tuple[SegformerForSemanticSegmentation, float]:
    """Per-pixel cross-entropy against the renders' masks (N, 1, S, S) in {0, 1}: label 1 is
    the object (the profile's `{0: background, 1: foreground}`)."""
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(config).train()
    inputs = processor_pixels(pixels, image_processor)
    targets = (masks[:, 0] > 0.5).long()
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(_: int) -> torch.Tensor:
        rows = _rows(len(targets), batch, generator)
        return model(pixel_values=inputs[rows], labels=targets[rows]).loss

    seconds = fit(model.parameters(), steps, lr, loss_fn)
    return model.eval(), seconds

