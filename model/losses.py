"""Loss terms as small pure functions: the diffusion loss (shared with the Textual Inversion
baseline), the clean-latent estimate it implies, and the identity preservation loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_target(noise: torch.Tensor, latents: torch.Tensor, timesteps: torch.Tensor, scheduler) -> torch.Tensor:
    """What the UNet should predict, per `scheduler.config.prediction_type`: (B, C, h, w)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if prediction_type == "sample":
        return latents
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def diffusion_loss(
    model_output: torch.Tensor, noise: torch.Tensor, latents: torch.Tensor, timesteps: torch.Tensor, scheduler,
    snr_gamma: float | None = None, pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between the UNet output and its target (float32 for stability).

    `snr_gamma`: Min-SNR weighting (Hang et al., 2023): each row weighted by min(SNR, gamma)
    relative to its target's own SNR scale, so nearly-clean timesteps (fine detail) stop
    dominating the gradient and the mid-noise ones, where layout and shape are decided, get it.
    `pixel_weight`: (B, 1, h, w) weights of each row's pixels (a weighted mean per row), e.g.
    more on the object than on the background around it.
    """
    target = diffusion_target(noise, latents, timesteps, scheduler)
    if snr_gamma is None and pixel_weight is None:
        return F.mse_loss(model_output.float(), target.float())
    squared = F.mse_loss(model_output.float(), target.float(), reduction="none").mean(dim=1, keepdim=True)
    if pixel_weight is None:
        per_row = squared.mean(dim=(1, 2, 3))
    else:
        weight = pixel_weight.float()
        per_row = (squared * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3))
    if snr_gamma is None:
        return per_row.mean()
    alphas = scheduler.alphas_cumprod.to(device=timesteps.device)[timesteps].float()
    snr = alphas / (1 - alphas)
    scale = snr + 1 if scheduler.config.prediction_type == "v_prediction" else snr
    weight = torch.minimum(snr, torch.full_like(snr, snr_gamma)) / scale  # (B,)
    return (per_row * weight).mean()


def predicted_original(
    model_output: torch.Tensor, noisy_latents: torch.Tensor, timesteps: torch.Tensor, scheduler
) -> torch.Tensor:
    """The clean latents x0 implied by one UNet output at x_t = sqrt(a) x0 + sqrt(1 - a) eps."""
    alphas = scheduler.alphas_cumprod.to(device=noisy_latents.device, dtype=noisy_latents.dtype)
    alpha = alphas[timesteps].view(-1, *([1] * (noisy_latents.ndim - 1)))  # (B, 1, 1, 1)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return (noisy_latents - (1 - alpha).sqrt() * model_output) / alpha.sqrt()
    if prediction_type == "v_prediction":
        return alpha.sqrt() * noisy_latents - (1 - alpha).sqrt() * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def identity_loss(predicted_embeds: torch.Tensor, reference_embeds: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity between (B, E) embeddings, averaged: 0 when identities match."""
    return (1 - F.cosine_similarity(predicted_embeds.float(), reference_embeds.float(), dim=-1)).mean()
