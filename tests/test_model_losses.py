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


def test_min_snr_weighting_matches_the_epsilon_loss_at_infinite_gamma_and_caps_clean_steps():
    """A v-prediction error weighted by SNR/(SNR+1) is exactly the same prediction's epsilon
    error (the Min-SNR paper's identity); a finite gamma only lowers the nearly-clean rows."""
    latents, noise, t = _sample()
    eps = DDPMScheduler(prediction_type="epsilon", beta_schedule="squaredcos_cap_v2")
    v = DDPMScheduler(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2")
    noisy = eps.add_noise(latents, noise, t)
    guess_eps = noise + 0.3 * torch.randn(noise.shape, generator=torch.Generator().manual_seed(1))
    alpha = eps.alphas_cumprod[t].view(-1, 1, 1, 1)
    guess_x0 = (noisy - (1 - alpha).sqrt() * guess_eps) / alpha.sqrt()
    guess_v = alpha.sqrt() * guess_eps - (1 - alpha).sqrt() * guess_x0  # the same prediction, as v
    plain_eps = diffusion_loss(guess_eps, noise, latents, t, eps)
    assert torch.allclose(diffusion_loss(guess_v, noise, latents, t, v, snr_gamma=1e12), plain_eps, rtol=1e-4)
    capped = diffusion_loss(guess_v, noise, latents, t, v, snr_gamma=5.0)
    assert capped < plain_eps  # t=0 and t=10 have SNR far above 5: their weight drops


def test_pixel_weights_average_each_rows_error_over_the_weighted_pixels():
    """With weight only on a region, a row's loss is its error there and nowhere else; uniform
    weights change nothing; a mixed weight lies between the region's error and the rest's."""
    latents, noise, t = _sample()
    scheduler = DDPMScheduler(prediction_type="epsilon")
    output = noise.clone()
    output[:, :, :4] += 2.0  # error 4 in the top half, 0 in the bottom half
    region = torch.zeros(4, 1, 8, 8)
    region[:, :, :4] = 1.0
    assert diffusion_loss(output, noise, latents, t, scheduler, pixel_weight=region) == pytest.approx(4.0)
    assert diffusion_loss(output, noise, latents, t, scheduler, pixel_weight=1 - region) == pytest.approx(0.0)
    uniform = diffusion_loss(output, noise, latents, t, scheduler, pixel_weight=torch.full((4, 1, 8, 8), 3.0))
    assert uniform == pytest.approx(diffusion_loss(output, noise, latents, t, scheduler))  # 2.0
    assert diffusion_loss(output, noise, latents, t, scheduler, pixel_weight=1 + 4 * region) == pytest.approx(
        4.0 * 5 / 6)
