"""generate(): a checkpoint + one reference photo + a prompt -> PNG files and a settings JSON.
The library function behind `tamer generate`; same arguments and seed give the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from model.pipeline import TamerPipeline

# What "{}" in a prompt becomes without a class noun. Training captions name the object by its
# class ("a red ceramic mug on ..."), so the class noun is the best stand-in; "object" is the
# neutral fallback: the object tokens, not the word, carry the identity.
DEFAULT_NOUN = "object"
SETTINGS_FILE = "settings.json"


def fill_placeholder(prompt: str, class_noun: str | None, placeholder: str = "{}") -> str:
    """'a {} on the beach' -> 'a mug on the beach' (or 'a object ...' without a class noun)."""
    return prompt.replace(placeholder, class_noun or DEFAULT_NOUN)


def generate(
    checkpoint_dir: str | Path,
    reference_image_path: str | Path,
    prompt: str,
    n: int,
    seed: int,
    out_dir: str | Path,
    steps: int = 30,
    guidance_scale: float = 5.0,
    object_guidance_scale: float = 2.0,
    placeholder: str = "{}",
    class_noun: str | None = None,
    device: str | None = None,
) -> list[Path]:
    """Write `n` images of the reference's object for `prompt` into `out_dir`; return their paths.

    Args:
        checkpoint_dir: a directory written by `TamerModel.save_pretrained` / `TamerPipeline.save_pretrained`.
        reference_image_path: one photo of the object (any size; CLIP preprocessing resizes it).
        prompt: text where `placeholder` stands for the object, e.g. "a {} on the beach".
        n: images to generate. seed: seeds one CPU generator, so images match across devices.
        steps, guidance_scale, object_guidance_scale: sampling steps and the two CFG scales
            (see `TamerPipeline`).
        class_noun: the word that replaces the placeholder (default "object").
        device: where to run; default CUDA when available, else CPU.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = TamerPipeline.from_pretrained(checkpoint_dir).to(device)
    pipe.set_progress_bar_config(disable=True)
    text = fill_placeholder(prompt, class_noun, placeholder)
    reference = Image.open(reference_image_path).convert("RGB")
    images = pipe(
        text,
        object_image=reference,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        object_guidance_scale=object_guidance_scale,
        num_images_per_prompt=n,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pil",
    ).images
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = out / f"{seed}_{i:03d}.png"
        image.save(path)
        paths.append(path)
    settings = {
        "checkpoint": str(checkpoint_dir), "reference_image": str(reference_image_path), "prompt": prompt,
        "resolved_prompt": text, "n": n, "seed": seed, "steps": steps, "guidance_scale": guidance_scale,
        "object_guidance_scale": object_guidance_scale, "scheduler": type(pipe.scheduler).__name__,
        "images": [p.name for p in paths],
    }
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    return paths
