"""Regularized joint training as a batch policy, and the one batch schema (see `collate`).

Each batch mixes domain rows (object-conditioned, with a reference that is a *different* image of
the target's object: cross-reference pairs) and general rows (text only, no object), so the UNet
keeps its text-to-image prior while learning to use object tokens. The policy is a pure function
of (seed, step): a resumed run sees the same batches.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class JointBatchPolicy:
    """Which rows of batch `step` are domain rows, and which examples fill them."""

    batch_size: int
    domain_ratio: float
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or not 0.0 <= self.domain_ratio <= 1.0:
            raise ValueError("need batch_size >= 1 and 0 <= domain_ratio <= 1")

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step])

    def domain_rows(self, step: int) -> torch.Tensor:
        """(B,) bool: True = domain row. The count is ratio*B rounded stochastically (so a
        0.8 ratio at batch 8 averages 6.4, not always 6), positions shuffled."""
        rng = self._rng(step)
        exact = self.domain_ratio * self.batch_size
        count = math.floor(exact) + int(rng.random() < exact - math.floor(exact))
        rows = np.zeros(self.batch_size, dtype=bool)
        rows[rng.permutation(self.batch_size)[:count]] = True
        return torch.from_numpy(rows)

    def indices(self, step: int, num_domain: int, num_general: int) -> list[tuple[str, int]]:
        """Per row, ("domain", i) or ("general", j): examples drawn uniformly from each pool."""
        rows = self.domain_rows(step).tolist()
        rng = self._rng(step + 1_000_003)  # a stream apart from the row draw, same determinism
        plan = []
        for is_domain in rows:
            if is_domain and num_domain == 0 or not is_domain and num_general == 0:
                raise ValueError("the batch policy needs a non-empty pool for every row kind it draws")
            pool, size = ("domain", num_domain) if is_domain else ("general", num_general)
            plan.append((pool, int(rng.integers(size))))
        return plan


def cross_reference(num_views: int, target: int, rng: np.random.Generator) -> int:
    """A reference view of the same object other than `target` (the target itself only when the
    object has a single view): the model must learn identity, not copy the reference's pixels.
    Drawn per step; `cross_reference_pairs` is the same rule as a fixed list."""
    if num_views < 2:
        return target
    other = int(rng.integers(num_views - 1))
    return other + (other >= target)


def cross_reference_pairs(members: Sequence[str], cap: int | None = None,
                          rng: np.random.Generator | None = None) -> list[tuple[str, str]]:
    """(reference, target) pairs of distinct images of one object, in sorted order: every
    ordered pair, or `cap` of them drawn without replacement with `rng`."""
    candidates = list(itertools.permutations(sorted(set(members)), 2))
    if cap is None or cap >= len(candidates):
        return candidates
    if rng is None:
        raise ValueError("drawing a capped set of pairs needs an rng")
    return [candidates[i] for i in sorted(rng.choice(len(candidates), cap, replace=False))]


def collate(examples: Sequence[dict]) -> dict:
    """Stack examples into the training batch. The schema, once:

    in, per example:
      pixel_values            (3, H, W) float in [-1, 1]   the denoising target image (VAE input)
      input_ids               (L,) long                    caption tokens, padded to the tokenizer max
      input_ids_2             (L,) long, SDXL only         the same caption for the second text tower
      reference_pixel_values  (3, h, w) float or None      CLIP-preprocessed reference; None = general row
      reference_mask          (1, h, w) float or None      foreground mask of the reference, if known
    out:
      pixel_values            (B, 3, H, W)
      input_ids, input_ids_2  (B, L)
      reference_pixel_values  (B, 3, h, w) or None         zeros in general rows; None if all are
      reference_mask          (B, 1, h, w) or None         None when no row has one
      has_mask                (B,) bool                    rows whose reference_mask is real
      has_object              (B,) bool                    domain rows (reference present)
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    references = [e.get("reference_pixel_values") for e in examples]
    masks = [e.get("reference_mask") for e in examples]
    shape = next((r.shape for r in references if r is not None), None)
    pixel_values = torch.stack([e["pixel_values"] for e in examples])  # (B, 3, H, W)
    reference = None
    if shape is not None:
        reference = torch.stack([r if r is not None else pixel_values.new_zeros(shape) for r in references])
    has_mask = torch.tensor([m is not None for m in masks])
    mask = None
    if has_mask.any():
        mask_shape = (1, *shape[-2:])
        mask = torch.stack([m.float() if m is not None else torch.ones(mask_shape) for m in masks])
    ids = {key: torch.stack([e[key] for e in examples]) for key in examples[0] if key.startswith("input_ids")}
    return {
        "pixel_values": pixel_values,
        **ids,  # (B, L) per text tower
        "reference_pixel_values": reference,  # (B, 3, h, w)
        "reference_mask": mask,  # (B, 1, h, w) or None
        "has_mask": has_mask,  # (B,)
        "has_object": torch.tensor([r is not None for r in references]),  # (B,)
    }
