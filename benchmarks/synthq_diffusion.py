"""Pixel-space diffusion for the synth-quality benchmark, trained here through the stage code
paths: the base model with the shared diffusion loss (`model.finetune.denoising_loss`), ours with
`TamerModel.training_step` on `JointBatchPolicy` + `collate` batches, Textual Inversion with
`model.textual_inversion`, sampling with `TamerPipeline` and diffusers' `StableDiffusionPipeline`.

At 32 px a VAE does not pay for itself (a 16x16x4 latent saves little compute and its
reconstruction error would blur 2-pixel eyes), so the "VAE" is an exact pass-through with the
AutoencoderKL interface that TamerModel and the pipelines call.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import ConfigMixin, DDIMScheduler, DDPMScheduler, ModelMixin, StableDiffusionPipeline
from diffusers.configuration_utils import register_to_config
from diffusers.training_utils import EMAModel
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers import UNet2DConditionModel
from transformers import CLIPModel, CLIPTextModel

from benchmarks.synthq_models import clip_pixels
from benchmarks.synthq_world import Renders, caption, object_prompt
from model.batching import JointBatchPolicy, collate, cross_reference
from model.finetune import denoising_loss, token_ids
from model.fit import fit
from model.tamer_model import TamerModel, TamerModelConfig
from model.textual_inversion import TextualInversionConfig, train_textual_inversion

CAPTION_DROPOUT = 0.1  # the base's unconditional rows (SD: 10%)
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


def build_unet(size: int, cross_attention_dim: int) -> UNet2DConditionModel:
    """RGB in, RGB out; attention (text and object) only at the 8 px level and the middle block.
    Attention at 16 px too cost twice the step time on 2 CPU cores (0.44 vs 0.23 s fwd+bwd at
    batch 16), and under a fixed time budget the base needs steps more than it needs that layer."""
    return UNet2DConditionModel(
        sample_size=size, in_channels=3, out_channels=3, block_out_channels=[32, 64, 64],
        layers_per_block=1, cross_attention_dim=cross_attention_dim, attention_head_dim=8,
        down_block_types=["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"], norm_num_groups=16)


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


def train_base(data: Renders, text_encoder, tokenizer, steps: int, batch: int, seed: int,
               on_ema: Callable[[int, UNet2DConditionModel], None] | None = None, every: int = 0,
               ) -> tuple[UNet2DConditionModel, float]:
    """Text-to-image base on full captions of the training identities (the shared loss), with
    the caption dropped for `CAPTION_DROPOUT` of rows so classifier-free guidance has an
    unconditional model to push from. Returns the EMA weights (warm-up EMA, as in diffusers'
    examples): at a few thousand steps they sample visibly cleaner than the last iterate.
    `on_ema(step, unet)` sees the EMA weights every `every` steps (the metric-vs-steps curve)."""
    torch.manual_seed(seed)
    unet = build_unet(data.pixels.shape[-1], text_encoder.config.hidden_size).train()
    ids = token_ids(tokenizer, [caption(data.identity(i), data.scenes[i]) for i in range(len(data))])
    with torch.no_grad():
        states = torch.cat([text_encoder(ids[i:i + 256])[0] for i in range(0, len(ids), 256)])  # (N, L, D)
        empty = text_encoder(token_ids(tokenizer, [""]))[0]  # (1, L, D)
    noise_schedule, generator = scheduler(), torch.Generator().manual_seed(seed)
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True)

    def step_fn(_: int) -> torch.Tensor:
        rows = torch.randint(0, len(data), (batch,), generator=generator)
        drop = torch.rand(batch, generator=generator) < CAPTION_DROPOUT
        text_states = torch.where(drop[:, None, None], empty, states[rows])
        return denoising_loss(unet, noise_schedule, data.pixels[rows], text_states, generator)

    def checkpoint(done: int) -> None:
        if on_ema is not None and every and done % every == 0:
            ema.store(unet.parameters())
            ema.copy_to(unet.parameters())
            on_ema(done, unet.eval())
            ema.restore(unet.parameters())
            unet.train()

    seconds = fit(unet.parameters(), steps, 1e-3, step_fn, schedule="warmup", clip_norm=1.0, ema=ema,
                  on_step=checkpoint)
    ema.copy_to(unet.parameters())
    return unet.eval().requires_grad_(False), seconds


VARIANTS: dict[str, dict] = {
    "ours": {},  # the full recipe: whole network, cross-reference, masking, identity loss
    "ours_no_crossref": {"cross_reference": False},
    "ours_no_idloss": {"identity_loss_weight": 0.0},
    "ours_adapter_only": {"trainable": "adapter"},
}


def train_ours(data: Renders, base_unet, text_encoder, tokenizer, clip: CLIPModel, processor,
               variant: str, steps: int, batch: int, seed: int) -> tuple[TamerModel, float]:
    """One recipe variant fine-tuned from (a copy of) the base, with the frozen in-domain CLIP as
    the object encoder. Domain rows: "a <obj> star, <scene>" with a reference view; general rows:
    full captions, no object (regularized joint training)."""
    options = dict(VARIANTS[variant])
    use_cross_reference = options.pop("cross_reference", True)
    config = TamerModelConfig(**options)
    torch.manual_seed(seed)
    model = TamerModel.from_components(copy.deepcopy(base_unet), PassThroughVAE(), text_encoder, tokenizer,
                                       scheduler(), clip, processor.image_processor, config)
    model.train()
    views = {k: (data.subject == k).nonzero().squeeze(1).tolist() for k in range(len(data.subjects))}
    policy = JointBatchPolicy(batch, config.domain_ratio, seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)

    def example(pool: str, index: int) -> dict:
        if pool == "general":
            row = index
            return {"pixel_values": data.pixels[row], "reference_pixel_values": None, "reference_mask": None,
                    "input_ids": token_ids(tokenizer, [caption(data.identity(row), data.scenes[row])])[0]}
        row = index
        own = views[int(data.subject[row])]
        ref = own[cross_reference(len(own), own.index(row), rng)] if use_cross_reference else row
        prompt = object_prompt(data.identity(row), data.scenes[row])
        return {"pixel_values": data.pixels[row], "input_ids": token_ids(tokenizer, [prompt])[0],
                "reference_pixel_values": clip_pixels(data.pixels[ref:ref + 1], processor)[0],
                "reference_mask": data.masks[ref]}

    def step_fn(step: int) -> torch.Tensor:
        plan = policy.indices(step, len(data), len(data))
        return model.training_step(collate([example(pool, i) for pool, i in plan]), generator)["total"]

    seconds = fit(model.trainable_parameters(), steps, 5e-4, step_fn, schedule="warmup", clip_norm=1.0)
    return model.train(False), seconds


def sd_pipeline(unet, text_encoder, tokenizer) -> StableDiffusionPipeline:
    """diffusers' text-to-image pipeline over the base model (text-only and TI sampling)."""
    pipe = StableDiffusionPipeline(vae=PassThroughVAE(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler.from_config(scheduler().config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    # The constructor rewrites `clip_sample` to False (right for SD latents, whose range is open);
    # these are pixels in [-1, 1], and without clipping an x0 estimate can run to +-200 and
    # sample saturated noise. Assigned after construction, the clipping scheduler stays.
    pipe.scheduler = DDIMScheduler.from_config(scheduler().config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def train_ti(base_unet, text_encoder, tokenizer, images: list, token: str, initializer: str,
             config: TextualInversionConfig) -> tuple[StableDiffusionPipeline, torch.Tensor, float]:
    """Textual Inversion of one object on the base model, with its own tokenizer/text-encoder
    copies; returns a pipeline that knows `token`, the learned embeds and seconds spent."""
    start = time.perf_counter()
    pipe = SimpleNamespace(unet=base_unet, vae=PassThroughVAE(), text_encoder=copy.deepcopy(text_encoder),
                           tokenizer=copy.deepcopy(tokenizer), scheduler=scheduler(), vae_scale_factor=1)
    embeds = train_textual_inversion(pipe, images, token, initializer, config)
    base_unet.requires_grad_(False)
    seconds = time.perf_counter() - start
    return sd_pipeline(base_unet, pipe.text_encoder.eval(), pipe.tokenizer), embeds, seconds
