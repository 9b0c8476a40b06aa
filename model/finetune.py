"""What the per-subject baselines (Textual Inversion, DreamBooth-LoRA) share: the frozen base
Stable Diffusion pipeline of a profile, the subject's latents, and one denoising-loss step
through `model.losses.diffusion_loss` (the same loss our training uses).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from model.base_family import FAMILIES, Conditioning
from model.losses import diffusion_loss
from model.metrics import resize_center_crop


def base_pipeline(profile) -> DiffusionPipeline:
    """The profile's base text-to-image model (no object adapter), as its family's diffusers
    pipeline (StableDiffusionPipeline, StableDiffusionXLPipeline)."""
    from model.profiles import load_profile, load_role

    profile = load_profile(profile) if isinstance(profile, str) else profile
    family = FAMILIES[profile.family]
    pipe = family.base_pipeline({role: load_role(profile, role) for role in family.component_names})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def resolution(pipe) -> int:
    """The UNet's native image side in pixels."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


@torch.no_grad()
def subject_posteriors(pipe, images: Sequence[Image.Image], flip: bool) -> torch.Tensor:
    """VAE posterior parameters (N, 2C, h, w) of the images (and their mirror images when
    `flip`), computed once; each step samples from them as the recipe's per-step encode would."""
    side = resolution(pipe)
    arrays = [np.asarray(resize_center_crop(image, side, side), dtype=np.float32) / 127.5 - 1.0 for image in images]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, H, W) in [-1, 1]
    if flip:
        pixels = torch.cat([pixels, pixels.flip(-1)])
    pixels = pixels.to(pipe.vae.device, pipe.vae.dtype)
    return pipe.vae.encode(pixels).latent_dist.parameters


def sample_latents(pipe, posteriors: torch.Tensor, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scaled latents (B, C, h, w) sampled from the chosen posterior rows."""
    mean, logvar = posteriors[rows].chunk(2, dim=1)
    noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean)
    return (mean + (0.5 * logvar).exp() * noise) * pipe.vae.config.scaling_factor


def denoising_loss(unet, scheduler, latents: torch.Tensor, text: torch.Tensor | Conditioning,
                   generator: torch.Generator, snr_gamma: float | None = None,
                   pixel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Noise the latents at random timesteps and score the UNet's prediction (shared loss).
    `text`: the family's conditioning, or bare (B, L, D) states (a one-encoder base)."""
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),),
                              generator=generator, device=generator.device).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    conditioning = text if isinstance(text, Conditioning) else Conditioning(text)
    output = unet(noisy, timesteps, **conditioning.unet_kwargs()).sample
    return diffusion_loss(output, noise, latents, timesteps, scheduler, snr_gamma, pixel_weight)
