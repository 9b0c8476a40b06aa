"""Textual Inversion (Gal et al. 2022), the per-object optimization baseline: learn a new token's
embedding on the frozen base model from a few images of the subject.

The recipe is diffusers' `textual_inversion.py` example: the placeholder starts as the class
noun's embedding, prompts come from the small ImageNet templates, AdamW on the embedding table
with every other row restored after each step, the shared diffusion loss. A base with two text
encoders (SDXL) learns one embedding per encoder, jointly, as diffusers' SDXL example does.

Saved as `learned_embeds.safetensors`: {token: (num_vectors, hidden)} for a one-encoder base,
which diffusers' `load_textual_inversion` loads (extra vectors become "<token>_1", ...);
{"clip_l": ..., "clip_g": ...} for SDXL, each loaded into its encoder (`load_learned_embeds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from model.base_family import family_of
from model.finetune import denoising_loss, resolution, sample_latents, subject_posteriors
from tamer.model_config import TextualInversionConfig

EMBEDS_FILE = "learned_embeds.safetensors"
SDXL_KEYS = ("clip_l", "clip_g")  # the names SDXL embedding files give the two encoders' rows


def placeholder_tokens(token: str, num_vectors: int) -> list[str]:
    """diffusers' naming of a multi-vector token: token, token_1, token_2, ..."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


class _Placeholder:
    """The placeholder's rows in one text encoder's embedding table, and the rows that must not move."""

    def __init__(self, tokenizer, text_encoder, names: list[str], initializer: str):
        if tokenizer.add_tokens(names) != len(names):
            raise ValueError(f"token {names[0]!r} is already in the tokenizer; pick another")
        init_ids = tokenizer.encode(initializer, add_special_tokens=False)
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows set below
        self.table = text_encoder.get_input_embeddings().weight  # (V, hidden)
        self.ids = torch.tensor(tokenizer.convert_tokens_to_ids(names), device=self.table.device)
        with torch.no_grad():  # start from the class noun (its first sub-token), as the recipe does
            self.table[self.ids] = self.table[init_ids[0]].clone()
        self.frozen = torch.ones(len(self.table), dtype=torch.bool, device=self.table.device)
        self.frozen[self.ids] = False
        self.original = self.table.detach().clone()
        text_encoder.requires_grad_(False)
        self.table.requires_grad_(True)

    @torch.no_grad()
    def restore_frozen(self) -> None:
        self.table[self.frozen] = self.original[self.frozen]

    def learned(self) -> torch.Tensor:
        self.table.requires_grad_(False)
        return self.table[self.ids].detach().clone()  # (num_vectors, hidden)


def train_textual_inversion(pipe, images: Sequence[Image.Image], token: str, initializer: str,
                            config: TextualInversionConfig) -> list[torch.Tensor]:
    """Learn `token` on `pipe` (a base pipeline of any family) from the subject's images.

    Adds the token to `pipe`'s tokenizers and text encoders (callers give each subject its own
    copies, or unload it afterwards); returns the learned (num_vectors, hidden) embeddings, one
    per text encoder.
    """
    family = family_of(pipe)
    names = placeholder_tokens(token, config.num_vectors)
    placeholders = [_Placeholder(tokenizer, encoder, names, initializer)
                    for tokenizer, encoder in family.text_towers(pipe)]
    generator = torch.Generator().manual_seed(config.seed)
    posteriors = subject_posteriors(pipe, images, config.flip)
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    optimizer = torch.optim.AdamW([p.table for p in placeholders], lr=config.lr, weight_decay=config.weight_decay)
    phrase, size = " ".join(names), resolution(pipe)
    for _ in range(config.steps):
        rows = torch.randint(0, len(posteriors), (config.batch_size,), generator=generator)
        picks = torch.randint(0, len(config.templates), (config.batch_size,), generator=generator)
        prompts = [config.templates[i].format(phrase) for i in picks.tolist()]
        latents = sample_latents(pipe, posteriors, rows, generator)
        loss = denoising_loss(pipe.unet, pipe.scheduler, latents, family.encode_prompts(pipe, prompts, size), generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for placeholder in placeholders:  # only the placeholder's rows may change
            placeholder.restore_frozen()
    return [placeholder.learned() for placeholder in placeholders]


def save_learned_embeds(directory: str | Path, token: str, embeds: Sequence[torch.Tensor]) -> Path:
    """Write the Textual Inversion file in the format diffusers reads for the family; returns its path."""
    path = Path(directory) / EMBEDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [token] if len(embeds) == 1 else list(SDXL_KEYS)
    if len(keys) != len(embeds):
        raise ValueError(f"expected 1 or {len(SDXL_KEYS)} embeddings, got {len(embeds)}")
    save_file({key: e.detach().cpu().contiguous() for key, e in zip(keys, embeds)}, str(path))
    return path


def load_learned_embeds(pipe, path: Path, token: str) -> None:
    """Load a `save_learned_embeds` file into `pipe` with diffusers' `load_textual_inversion`
    (into each text encoder, for SDXL)."""
    towers = family_of(pipe).text_towers(pipe)
    if len(towers) == 1:
        pipe.load_textual_inversion(str(path), token=token)
        return
    state = load_file(str(path))
    for key, (tokenizer, encoder) in zip(SDXL_KEYS, towers):
        rows = state[key]
        pipe.load_textual_inversion(rows, token=placeholder_tokens(token, len(rows)), text_encoder=encoder,
                                    tokenizer=tokenizer)


def unload_learned_embeds(pipe, token: str) -> None:
    """Remove `token` from every text encoder `load_learned_embeds` put it in."""
    towers = family_of(pipe).text_towers(pipe)
    if len(towers) == 1:
        pipe.unload_textual_inversion(token)
        return
    for tokenizer, encoder in towers:
        pipe.unload_textual_inversion(token, tokenizer=tokenizer, text_encoder=encoder)
