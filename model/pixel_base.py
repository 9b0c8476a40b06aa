"""The synth profile's text-to-image base: a pixel-space UNet on 32 px renders, its text
encoder, the noise schedule, and the pipeline that samples it.

At 32 px a VAE does not pay for itself (a 16x16x4 latent saves little compute and its
reconstruction error would blur 2-pixel eyes), so the "VAE" is an exact pass-through with the
AutoencoderKL interface that TamerModel and the pipelines call; it saves and loads with
`save_pretrained` / `from_pretrained` like any profile role.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from diffusers import (ConfigMixin, DDPMScheduler, ModelMixin, StableDiffusionPipeline,
                       UNet2DConditionModel)
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from transformers import CLIPModel, CLIPTextModel

from model.base_family import FAMILIES, token_ids
from model.finetune import denoising_loss
from model.fit import Job, run, step_generator
from model.sampling import use_sampler

CAPTION_DROPOUT = 0.1  # the base's unconditional rows (SD: 10%)
SHORT_CAPTIONS = 0.4  # rows captioned with the class prompt only (what evaluation asks)
SNR_GAMMA = 5.0  # Min-SNR weighting of the base's loss (model.losses.diffusion_loss)
_LOGVAR = -30.0  # diffusers' clamp floor: the posterior is a point mass at the pixels


class PassThroughVAE(ModelMixin, ConfigMixin):
    """latents = pixels (scaling 1, one "block" so vae_scale_factor = 1)."""

    @register_to_config
    def __init__(self, block_out_channels: tuple[int, ...] = (3,), scaling_factor: float = 1.0):
        super().__init__()
        # ModelMixin reads .dtype/.device from parameters; this one carries no information
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        posterior = DiagonalGaussianDistribution(torch.cat([x, torch.full_like(x, _LOGVAR)], dim=1))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        return DecoderOutput(sample=z) if return_dict else (z,)


def build_unet(size: int, cross_attention_dim: int, text_levels: int = 2, heads: int = 1) -> UNet2DConditionModel:
    """RGB in, RGB out; attention (text and object) at the `text_levels` coarsest levels (8 px,
    then 16 px) and the middle block. Attention at 16 px costs about twice the step time on 2
    CPU cores (0.44 vs 0.23 s fwd+bwd at batch 16), and buys the words the layout depends on:
    at 1,000 steps of the same data and seed, swapping the shape word raised the loss at t=600
    by 1.2% with it and 0.01% without (`benchmarks/base_conditioning.py`; the 8 px-only base
    heard shape at 3.1% only after 6,000 steps). diffusers reads `attention_head_dim` as the
    number of heads here: 8 heads of 8 channels made CPU attention 29% of the step, and one
    head of 64 samples the same at 3,000 steps for 0.78x the step time (0.52 vs 0.67 s, 2
    threads, batch 16)."""
    if text_levels not in (1, 2):
        raise ValueError(f"text_levels must be 1 (8 px) or 2 (8 and 16 px), got {text_levels}")
    middle = ["CrossAttnDownBlock2D" if text_levels == 2 else "DownBlock2D"]
    return UNet2DConditionModel(
        sample_size=size, in_channels=3, out_channels=3, block_out_channels=[32, 64, 64],
        layers_per_block=1, cross_attention_dim=cross_attention_dim, attention_head_dim=heads,
        down_block_types=["DownBlock2D", *middle, "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", *[b.replace("Down", "Up") for b in middle], "UpBlock2D"],
        norm_num_groups=16)


def scheduler() -> DDPMScheduler:
    """Cosine schedule, v-prediction. With DDPM's linear betas and epsilon prediction, a base
    trained for a few hundred steps denoised t=300 well but sampled gray, speckled fields: at
    t near 1000 the x0 estimate divides the epsilon error by sqrt(alpha_bar) ~ 0.006. With v
    the x0 estimate stays well-conditioned there, and the same 300 steps sample the prompted
    backgrounds."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="v_prediction", clip_sample=True)


def text_encoder_from_clip(clip: CLIPModel) -> CLIPTextModel:
    """The in-domain CLIP's text tower as the diffusion text encoder (frozen, as in SD)."""
    encoder = CLIPTextModel(clip.config.text_config)
    encoder.text_model.load_state_dict(clip.text_model.state_dict())
    return encoder.eval().requires_grad_(False)


def base_job(pixels: torch.Tensor, captions: Sequence[str], short_captions: Sequence[str], text_encoder,
             tokenizer, steps: int, batch: int, seed: int, text_levels: int = 2, heads: int = 1,
             masks: torch.Tensor | None = None, object_weight: float = 1.0,
             row_pool: Callable[[int], torch.Tensor] | None = None) -> Job:
    """Text-to-image base on `pixels` (N, 3, S, S) in [-1, 1] with their `captions` (the shared
    loss), trained jointly with (a copy of) the text encoder. SD keeps its text encoder frozen
    because CLIP arrived knowing the words; this in-domain CLIP's text tower, contrastively
    trained for minutes, barely separates what the base must draw (the hidden states of
    "a star, ..." and "a arrow, ..." have cosine 0.997; a background change gives 0.61), so a
    frozen copy left shape and position at chance. Each row's caption is its full description
    or, for `SHORT_CAPTIONS` of rows, its short form: the class prompt that evaluation and users
    write ("a star, against a blue sky, ..."); it is dropped for `CAPTION_DROPOUT` of rows so
    classifier-free guidance has an unconditional model. Weights are averaged (warm-up EMA, as
    in diffusers' examples): at a few thousand steps they sample visibly cleaner.
    `masks` with `object_weight` weight the loss on object pixels; `row_pool(step)` limits the
    rows a step draws (a curriculum); `benchmarks.base_probe` measures both."""
    torch.manual_seed(seed)
    unet = build_unet(pixels.shape[-1], text_encoder.config.hidden_size, text_levels, heads).train()
    encoder = copy.deepcopy(text_encoder).train().requires_grad_(True)
    full, short = token_ids(tokenizer, captions), token_ids(tokenizer, short_captions)
    empty = token_ids(tokenizer, [""])
    noise_schedule = scheduler()

    def loss(step: int) -> torch.Tensor:
        generator = step_generator(seed, step)
        if row_pool is None:
            rows = torch.randint(0, len(pixels), (batch,), generator=generator)
        else:  # a curriculum: the rows this step may draw from
            pool = row_pool(step)
            rows = pool[torch.randint(0, len(pool), (batch,), generator=generator)]
        pick = torch.rand(batch, generator=generator)
        ids = torch.where((pick < SHORT_CAPTIONS)[:, None], short[rows], full[rows])
        ids = torch.where((pick >= 1 - CAPTION_DROPOUT)[:, None], empty, ids)
        weight = None if masks is None else 1 + (object_weight - 1) * masks[rows]
        return denoising_loss(unet, noise_schedule, pixels[rows], encoder(ids)[0], generator, SNR_GAMMA, weight)

    return Job({"unet": unet, "text_encoder": encoder}, loss, steps, 1e-3, schedule="warmup", clip_norm=1.0,
               ema_decay=0.999)


def train_base(pixels: torch.Tensor, captions: Sequence[str], short_captions: Sequence[str], text_encoder,
               tokenizer, steps: int, batch: int, seed: int,
               on_ema: Callable[[int, UNet2DConditionModel, CLIPTextModel], None] | None = None,
               every: int = 0) -> tuple[UNet2DConditionModel, CLIPTextModel, float]:
    """`base_job` in-process; returns the EMA weights of both models and the seconds spent.
    `on_ema(step, unet, text_encoder)` sees the EMA weights every `every` steps (the curve)."""
    job = base_job(pixels, captions, short_captions, text_encoder, tokenizer, steps, batch, seed)
    unet, encoder = job.modules["unet"], job.modules["text_encoder"]

    def curve(done: int, ema) -> None:
        if on_ema is not None and every and done % every == 0:
            parameters = job.parameters()
            ema.store(parameters)
            ema.copy_to(parameters)
            on_ema(done, unet.eval(), encoder.eval())
            ema.restore(parameters)
            unet.train(), encoder.train()

    seconds = run(job, on_step=curve)
    return unet.eval().requires_grad_(False), encoder.eval().requires_grad_(False), seconds


def sd_pipeline(unet, text_encoder, tokenizer, sampler: str = "ddim") -> StableDiffusionPipeline:
    """diffusers' text-to-image pipeline over the base model (text-only and TI sampling), with
    `sampler` (`model.sampling`) on the base's own schedule."""
    pipe = FAMILIES["sd"].base_pipeline(dict(vae=PassThroughVAE(), text_encoder=text_encoder, tokenizer=tokenizer,
                                             unet=unet, scheduler=scheduler()))
    use_sampler(pipe, sampler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
