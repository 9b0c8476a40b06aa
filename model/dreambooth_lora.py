"""DreamBooth with LoRA (Ruiz et al. 2023; Hu et al. 2021), the per-subject fine-tuning baseline:
low-rank adapters on the UNet's attention projections, trained with the DreamBooth recipe
(model/dreambooth.py) on "a photo of sks <class>".

The recipe is diffusers' `train_dreambooth_lora.py`: rank 4 on to_q/to_k/to_v/to_out.0, lr 1e-4,
500 steps, batch 1. Weights are saved with
the family pipeline's `save_lora_weights` (`pytorch_lora_weights.safetensors`), which
`load_lora_weights` loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image

from model.base_family import family_of
from model.dreambooth import fit_dreambooth, subject_phrase
from tamer.model_config import DreamBoothLoraConfig

LORA_FILE = "pytorch_lora_weights.safetensors"
TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]


def train_dreambooth_lora(pipe, images: Sequence[Image.Image], class_noun: str,
                          config: DreamBoothLoraConfig, adapter_name: str) -> dict[str, torch.Tensor]:
    """Train a LoRA adapter named `adapter_name` on `pipe.unet` (a base pipeline of any family);
    returns its weights in diffusers' format. The adapter stays on the UNet: `delete_adapters`."""
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    for _, encoder in family_of(pipe).text_towers(pipe):
        encoder.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # LoRA's random init, without touching the caller's RNG
        torch.manual_seed(config.seed)
        pipe.unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.rank, init_lora_weights="gaussian",
                                         target_modules=TARGET_MODULES), adapter_name=adapter_name)
    pipe.unet.set_adapters(adapter_name)
    fit_dreambooth(pipe, images, class_noun, config, [p for p in pipe.unet.parameters() if p.requires_grad])
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet, adapter_name=adapter_name))


def save_lora(pipe, directory: str | Path, weights: dict[str, torch.Tensor]) -> Path:
    """Write `pytorch_lora_weights.safetensors` with diffusers' LoRA saver; returns its path."""
    type(pipe).save_lora_weights(str(directory), unet_lora_layers=weights, safe_serialization=True)
    return Path(directory) / LORA_FILE


def load_lora(pipe, path: Path, adapter: str) -> None:
    """Load a `save_lora` file as `adapter`, naming the file: diffusers refuses a folder
    without `weight_name` offline, and the name keeps it from picking a pickle beside it."""
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)

