"""Trainers for the roles the `synth` profile learns from labelled renders: the captioner (BLIP
architecture, on ground-truth descriptions), the segmentation model (Segformer, on the renders'
masks) and the `dino` role (a ViT whose CLS token groups views of one object together).

Inputs are tensors, not a world: pixels (N, 3, S, S) in [-1, 1], and per row a caption, a mask
or an identity label. Each trainer returns the model in eval mode and the seconds spent; the
models are ordinary transformers classes, so `save_pretrained` + the profile's `from_pretrained`
load them like any checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import (BlipConfig, BlipForConditionalGeneration, SegformerConfig,
                          SegformerForSemanticSegmentation, ViTConfig, ViTModel)

from model.fit import fit


def processor_pixels(pixels: torch.Tensor, image_processor) -> torch.Tensor:
    """[-1, 1] pixels already at the model's side -> what `image_processor` would feed it."""
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    return ((pixels + 1) / 2 - mean) / std


def _rows(n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=generator)


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


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupCon (Khosla et al. 2020): each row is pulled toward every other row of its label."""
    z = F.normalize(embeddings, dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = logits.log_softmax(dim=1).masked_fill(~positives, 0.0)
    counts = positives.sum(1)
    keep = counts > 0
    return -(log_prob.sum(1)[keep] / counts[keep]).mean()


def train_dino(config: ViTConfig, image_processor, pixels: torch.Tensor, identities: torch.Tensor,
               steps: int, batch: int, lr: float, seed: int, views_per_identity: int = 2,
               ) -> tuple[ViTModel, float]:
    """The `dino` role's ViT: its CLS token (`last_hidden_state[:, 0]`, what DINO scores read)
    is trained so views of one object (different scenes) are close and other objects far —
    what the DINO score is used to measure. Each batch holds `views_per_identity` views of
    `batch // views_per_identity` identities, so every row has a positive."""
    torch.manual_seed(seed)
    model = ViTModel(config, add_pooling_layer=False).train()
    inputs = processor_pixels(pixels, image_processor)
    by_identity = [torch.nonzero(identities == k).squeeze(1) for k in torch.unique(identities)]
    by_identity = [rows for rows in by_identity if len(rows) >= views_per_identity]
    if not by_identity:
        raise ValueError(f"no identity has {views_per_identity} views to contrast")
    generator = torch.Generator().manual_seed(seed)
    groups = max(1, batch // views_per_identity)

    def loss_fn(_: int) -> torch.Tensor:
        picked = torch.randint(0, len(by_identity), (groups,), generator=generator)
        rows = torch.cat([by_identity[k][torch.randperm(len(by_identity[k]), generator=generator)[:views_per_identity]]
                          for k in picked.tolist()])
        cls = model(pixel_values=inputs[rows]).last_hidden_state[:, 0]
        return supervised_contrastive(cls, identities[rows])

    seconds = fit(model.parameters(), steps, lr, loss_fn)
    return model.eval(), seconds
