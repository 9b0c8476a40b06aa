"""Loss targets against the scheduler's own definitions."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from model.losses import diffusion_loss, diffusion_target, identity_loss, predicted_original


def _sample(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(4, 4, 8, 8, generator=g)
    noise = torch.randn(4, 4, 8, 8, generator=g)
    timesteps = torch.tensor([0, 10, 500, 999])
    return latents, noise, timesteps


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DDIMScheduler])
def test_targets_match_the_scheduler(scheduler_cls):
    latents, noise, t = _sample()
    eps = scheduler_cls(prediction_type="epsilon", beta_schedule="scaled_linear")
    v = scheduler_cls(prediction_type="v_prediction", beta_schedule="scaled_linear")
    assert torch.equal(diffusion_target(noise, latents, t, eps), noise)
    assert torch.equal(diffusion_target(noise, latents, t, v), v.get_velocity(latents, noise, t))
    assert not torch.allclose(diffusion_target(noise, latents, t, v), noise)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_is_zero_at_the_target_and_x0_inverts_add_noise(prediction_type):
    latents, noise, t = _sample()
    scheduler = DDPMScheduler(prediction_type=prediction_type, beta_schedule="scaled_linear")
    target = diffusion_target(noise, latents, t, scheduler)
    assert diffusion_loss(target, noise, latents, t, scheduler) == 0
    assert diffusion_loss(target + 1, noise, latents, t, scheduler) == pytest.approx(1.0)
    noisy = scheduler.add_noise(latents, noise, t)
    torch.testing.assert_close(predicted_original(target, noisy, t, scheduler), latents, atol=2e-3, rtol=1e-3)


def test_identity_loss_is_one_minus_cosine():
    a = torch.randn(3, 16)
    assert identity_loss(a, 2 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert identity_loss(a, -a).item() == pytest.approx(2.0, abs=1e-6)
