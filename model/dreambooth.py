"""DreamBooth (Ruiz et al. 2023), the per-subject fine-tuning recipe of diffusers'
`train_dreambooth.py` / `train_dreambooth_lora.py`: the UNet learns the subject from
"a photo of sks <class>"; prior preservation (class images sampled from the base model, their
loss added with a weight) is optional, as there. What trains is the caller's choice: the whole
UNet (`train_dreambooth_full`) or LoRA adapters on it (model/dreambooth_lora.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image

from model.base_family import Conditioning, family_of
from model.finetune import denoising_loss, resolution, sample_latents, subject_posteriors
from tamer.model_config import DreamBoothConfig, DreamBoothRecipe

UNET_FILE = "diffusion_pytorch_model.safetensors"  # what `save_pretrained` writes


def subject_phrase(config: DreamBoothRecipe, class_noun: str) -> str:
    return f"{config.identifier} {class_noun}"


def fit_dreambooth(pipe, images: Sequence[Image.Image], class_noun: str, config: DreamBoothRecipe,
                   params: Iterable[torch.nn.Parameter]) -> None:
    """Optimize `params` (of `pipe.unet`) with the recipe's loss; the VAE and text encoder stay
    frozen, and the UNet is left in eval mode with no gradients."""
    generator = torch.Generator().manual_seed(config.seed)
    posteriors = subject_posteriors(pipe, images, config.flip)
    prompts = [config.instance_prompt.format(subject_phrase(config, class_noun))]
    if config.prior_preservation:  # class images come from the model before any training
        class_posteriors = subject_posteriors(pipe, _class_images(pipe, class_noun, config), config.flip)
        prompts.append(config.class_prompt.format(class_noun))
    with torch.no_grad():
        text = family_of(pipe).encode_prompts(pipe, prompts, resolution(pipe))  # rows: instance, class
    optimizer = torch.optim.AdamW(list(params), lr=config.lr)
    pipe.unet.train()
    b = config.batch_size
    for _ in range(config.steps):
        rows = torch.randint(0, len(posteriors), (b,), generator=generator)
        latents = sample_latents(pipe, posteriors, rows, generator)
        loss = denoising_loss(pipe.unet, pipe.scheduler, latents, _rows(text, 0, b), generator)
        if config.prior_preservation:
            rows = torch.randint(0, len(class_posteriors), (b,), generator=generator)
            latents = sample_latents(pipe, class_posteriors, rows, generator)
            prior = denoising_loss(pipe.unet, pipe.scheduler, latents, _rows(text, 1, b), generator)
            loss = loss + config.prior_loss_weight * prior
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    pipe.unet.eval()
    pipe.unet.requires_grad_(False)


def _rows(text: Conditioning, row: int, count: int) -> Conditioning:
    """Row `row` of `text`, repeated `count` times (one prompt for the whole batch)."""
    return text.map(lambda t: t[row:row + 1].expand(count, *t.shape[1:]))


def train_dreambooth_full(pipe, images: Sequence[Image.Image], class_noun: str, config: DreamBoothConfig) -> None:
    """Fine-tune every weight of `pipe.unet` in place (pass a pipeline on a copy of the UNet to
    keep the base); text encoder and VAE stay frozen, as in the recipe's default."""
    pipe.vae.requires_grad_(False)
    for _, encoder in family_of(pipe).text_towers(pipe):
        encoder.requires_grad_(False)
    pipe.unet.requires_grad_(True)
    fit_dreambooth(pipe, images, class_noun, config, pipe.unet.parameters())


def save_unet(unet, directory: str | Path) -> Path:
    """The fine-tuned UNet in diffusers' format (config + safetensors); returns the folder."""
    unet.save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)


@torch.no_grad()
def _class_images(pipe, class_noun: str, config: DreamBoothRecipe) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(config.seed)
    prompt = config.class_prompt.format(class_noun)
    return pipe([prompt] * config.class_images, num_inference_steps=config.class_inference_steps,
                generator=generator).images
