"""Object embedding masking: decide which reference patches are the object, and zero the patch
tokens of the others, so object tokens carry identity and not background.

The foreground mask comes, in order of preference, from the data (`reference_mask`), from the
profile's segmentation model, or from a saliency fallback (colour distance from the border,
weighted by a centre prior: product photos put the object mid-frame on a plainer surround).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# A patch is foreground when at least this fraction of its pixels is: a majority vote.
PATCH_FOREGROUND_FRACTION = 0.5


def saliency_mask(images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, h, w), any affine colour normalisation -> foreground mask (B, 1, h, w) in {0, 1}.

    Score = distance of each pixel's colour from the mean border colour, times a Gaussian centre
    prior (sigma = half the side); foreground = score above the image's mean score.
    """
    _, _, h, w = images.shape
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=2)
    border_colour = border.mean(dim=2)[:, :, None, None]  # (B, 3, 1, 1)
    distance = (images - border_colour).norm(dim=1, keepdim=True)  # (B, 1, h, w)
    ys = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype)
    xs = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype)
    prior = torch.exp(-2 * (ys[:, None] ** 2 + xs[None, :] ** 2))  # (h, w): exp(-r^2 / (2 * 0.5^2))
    score = distance * prior
    return (score > score.mean(dim=(2, 3), keepdim=True)).to(images.dtype)


def patch_keep(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Pixel mask (B, 1, h, w) -> which patches are kept (B, P) bool, row-major like CLIP's patches.

    An image with no foreground patch keeps all of them: an empty object embedding would teach
    the model nothing, and a wrong mask should degrade to "no masking", not to "no object".
    """
    fraction = F.avg_pool2d(mask.float(), kernel_size=patch_size)  # (B, 1, h/p, w/p)
    keep = fraction.flatten(1) >= PATCH_FOREGROUND_FRACTION  # (B, P)
    empty = ~keep.any(dim=1, keepdim=True)  # (B, 1)
    return keep | empty


def mask_patch_tokens(patch_tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero background patch tokens: (B, P, C) * (B, P) -> (B, P, C); kept tokens are untouched."""
    return patch_tokens * keep.unsqueeze(-1).to(patch_tokens.dtype)


class SegmentationMasker(nn.Module):
    """A semantic-segmentation model (Segformer-like: `logits (B, labels, h', w')`) as a mask source.

    Foreground = every label except the one named "background" (or label 0 if none is named).
    """

    def __init__(self, model: nn.Module, processor, clip_mean: list[float], clip_std: list[float]):
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.processor = processor
        self.register_buffer("clip_mean", torch.tensor(clip_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(clip_std).view(1, 3, 1, 1), persistent=False)
        labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
        self.background = labels.get("background", 0)

    @torch.no_grad()
    def forward(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised pixels (B, 3, h, w) -> foreground mask (B, 1, h, w) in {0, 1}."""
        images = (clip_pixels * self.clip_std + self.clip_mean).clamp(0, 1)  # back to [0, 1]
        inputs = self.processor(images=list(images.float().cpu()), do_rescale=False, return_tensors="pt")
        pixel_values = inputs.pixel_values.to(device=clip_pixels.device, dtype=self.model.dtype)
        logits = self.model(pixel_values=pixel_values).logits  # (B, labels, h', w')
        logits = F.interpolate(logits.float(), size=clip_pixels.shape[-2:], mode="bilinear", align_corners=False)
        return (logits.argmax(dim=1, keepdim=True) != self.background).to(clip_pixels.dtype)


def foreground_mask(
    clip_pixels: torch.Tensor,
    mask: torch.Tensor | None = None,
    has_mask: torch.Tensor | None = None,
    segmenter: SegmentationMasker | None = None,
) -> torch.Tensor:
    """The foreground mask (B, 1, h, w): per row the data's `mask` where `has_mask` (default: all
    rows when a mask is given), else the segmenter's, else saliency."""
    if mask is not None:
        mask = F.interpolate(mask.float(), size=clip_pixels.shape[-2:], mode="nearest").to(clip_pixels.dtype)
        has_mask = torch.ones(len(mask), dtype=torch.bool) if has_mask is None else has_mask
        if has_mask.all():
            return mask
    estimated = segmenter(clip_pixels) if segmenter is not None else saliency_mask(clip_pixels)
    if mask is None:
        return estimated
    return torch.where(has_mask.to(mask.device).view(-1, 1, 1, 1), mask, estimated)
