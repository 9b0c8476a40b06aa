"""Textual Inversion (Gal et al. 2022), the per-object optimization baseline: learn a new token's
embedding on the frozen base model from a few images of the subject.

The recipe is diffusers' `textual_inversion.py` example: the placeholder starts as the class
noun's embedding, prompts come from the small ImageNet templates, AdamW on the embedding table
with every other row restored after each step, the shared diffusion loss. The result is saved as
`learned_embeds.safetensors` = {token: (num_vectors, hidden)}, which diffusers'
`load_textual_inversion` loads (extra vectors become "<token>_1", ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from model.finetune import denoising_loss, sample_latents, subject_posteriors, token_ids
from tamer.model_config import TextualInversionConfig

EMBEDS_FILE = "learned_embeds.safetensors"


def placeholder_tokens(token: str, num_vectors: int) -> list[str]:
    """diffusers' naming of a multi-vector token: token, token_1, token_2, ..."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def train_textual_inversion(pipe, images: Sequence[Image.Image], token: str, initializer: str,
                            config: TextualInversionConfig) -> torch.Tensor:
    """Learn `token` on `pipe` (a base StableDiffusionPipeline) from the subject's images.

    Adds the token to `pipe`'s tokenizer and text encoder (callers give each subject its own
    copies, or unload it afterwards); returns the learned (num_vectors, hidden) embeddings.
    """
    tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
    names = placeholder_tokens(token, config.num_vectors)
    if tokenizer.add_tokens(names) != len(names):
        raise ValueError(f"token {token!r} is already in the tokenizer; pick another")
    init_ids = tokenizer.encode(initializer, add_special_tokens=False)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows set below
    embeddings = text_encoder.get_input_embeddings().weight  # (V, hidden)
    new_ids = torch.tensor(tokenizer.convert_tokens_to_ids(names), device=embeddings.device)
    with torch.no_grad():  # start from the class noun (its first sub-token), as the recipe does
        embeddings[new_ids] = embeddings[init_ids[0]].clone()
    frozen_rows = torch.ones(len(embeddings), dtype=torch.bool, device=embeddings.device)
    frozen_rows[new_ids] = False
    original = embeddings.detach().clone()

    generator = torch.Generator().manual_seed(config.seed)
    posteriors = subject_posteriors(pipe, images, config.flip)
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    embeddings.requires_grad_(True)
    optimizer = torch.optim.AdamW([embeddings], lr=config.lr, weight_decay=config.weight_decay)
    phrase = " ".join(names)
    for _ in range(config.steps):
        rows = torch.randint(0, len(posteriors), (config.batch_size,), generator=generator)
        picks = torch.randint(0, len(config.templates), (config.batch_size,), generator=generator)
        prompts = [config.templates[i].format(phrase) for i in picks.tolist()]
        latents = sample_latents(pipe, posteriors, rows, generator)
        text_states = text_encoder(token_ids(tokenizer, prompts).to(text_encoder.device))[0]
        loss = denoising_loss(pipe.unet, pipe.scheduler, latents, text_states, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # only the placeholder's rows may change
            embeddings[frozen_rows] = original[frozen_rows]
    embeddings.requires_grad_(False)
    return embeddings[new_ids].detach().clone()  # (num_vectors, hidden)


def save_learned_embeds(directory: str | Path, token: str, embeds: torch.Tensor) -> Path:
    """Write diffusers' Textual Inversion file; returns its path."""
    path = Path(directory) / EMBEDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({token: embeds.detach().cpu().contiguous()}, str(path))
    return path
