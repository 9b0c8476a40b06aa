"""Real-size shape check without weights: build a real base model's architecture (SD 1.5, SDXL)
from its published configs (`benchmarks/base_shapes.py`) with random weights, nothing
downloaded, and run one training step and one sampling step of ours on CPU at a reduced
resolution, so shape and dtype mistakes of the real profiles are caught here, not on a user's GPU.

    .venv/bin/python -m benchmarks.shape_check --shapes sd15 sdxl        # minutes, ~10 GB RAM
    .venv/bin/python -m benchmarks.shape_check --shapes tiny tiny-sdxl   # seconds (the test suite)

Every part the profile would load is built (UNet, VAE, text encoder(s) with the real CLIP
vocabulary, the ViT-L/14 object encoder) at `--dtype` (bfloat16: the reduced precision CPU
kernels have); the adapter is ours, fresh. Checked: the loss is finite, the object adapter gets a
gradient and is all that trains, the sample has the requested shape and no NaN. Writes
`shape_check.json` (seconds, parameters and peak RSS per architecture).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.base_shapes import SHAPES
from benchmarks.common import write_result


def build_model(shapes: dict[str, Any], dtype: torch.dtype):
    """A TamerModel over random-weight components of `shapes` (trainable: the adapter)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextConfig, CLIPTextModel,
                              CLIPTextModelWithProjection)

    from model.tamer_model import TamerModel
    from model.tiny import clip_tokenizer
    from tamer.model_config import TamerModelConfig

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built at the check's precision: half the memory in bf16
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = clip_tokenizer(Path(tmp))
        second = shapes.get("text_encoder_2")
        clip = shapes["clip"]
        side = clip["vision"]["image_size"]
        model = TamerModel.from_components(
            UNet2DConditionModel(**shapes["unet"]), AutoencoderKL(**shapes["vae"]),
            CLIPTextModel(CLIPTextConfig(**shapes["text_encoder"])), tokenizer,
            DDPMScheduler.from_config(shapes["scheduler"]),  # as the profile loads it: DDIM-only keys ignored
            CLIPModel(CLIPConfig(text_config=clip["text"], vision_config=clip["vision"],
                                 projection_dim=clip["projection_dim"])),
            CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
            TamerModelConfig(trainable="adapter"),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**second)) if second else None,
            tokenizer_2=tokenizer if second else None)
    finally:
        torch.set_default_dtype(previous)
    return model


def check(name: str, resolution: int, dtype: torch.dtype) -> dict[str, Any]:
    """Build `name`'s architecture, one training step and one sampling step at `resolution` px."""
    from PIL import Image

    from model.batching import collate

    began = time.perf_counter()
    model = build_model(SHAPES[name], dtype)
    built = time.perf_counter() - began
    side = model.object_encoder.image_size
    ids = {key: row[0] for key, row in model.family.tokenize(model.pipe, ["a photo of a red backpack"]).items()}
    generator = torch.Generator().manual_seed(0)
    examples = [{"pixel_values": torch.rand(3, resolution, resolution, generator=generator).to(dtype) * 2 - 1,
                 "reference_pixel_values": torch.rand(3, side, side, generator=generator).to(dtype),
                 "reference_mask": None, **ids} for _ in range(2)]
    model.train()
    began = time.perf_counter()
    terms = model.training_step(collate(examples), torch.Generator().manual_seed(1))
    terms["total"].backward()
    trained = time.perf_counter() - began
    adapter_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.parameters())
    # what trains is exactly the adapter: every base part (both text towers too) is frozen
    only_adapter = {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.adapter.parameters()}
    model.eval()
    reference = Image.new("RGB", (resolution, resolution), (200, 40, 40))
    began = time.perf_counter()
    image = model.pipe("a photo of a backpack on the beach", object_image=reference, height=resolution,
                       width=resolution, num_inference_steps=1, output_type="pt").images
    sampled = time.perf_counter() - began
    result = {
        "family": model.family.name, "resolution": resolution, "dtype": str(dtype).removeprefix("torch."),
        "unet_parameters": sum(p.numel() for p in model.unet.parameters()),
        "loss": float(terms["total"]), "loss_finite": bool(torch.isfinite(terms["total"])),
        "adapter_gradient": adapter_grad, "only_adapter_trains": only_adapter,
        "sample_shape": list(image.shape), "sample_finite": bool(torch.isfinite(image.float()).all()),
        "seconds": {"build": built, "train_step": trained, "sample_step": sampled},
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    result["ok"] = (result["loss_finite"] and adapter_grad and only_adapter and result["sample_finite"]
                    and result["sample_shape"] == [1, 3, resolution, resolution])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["sd15", "sdxl"], choices=sorted(SHAPES))
    parser.add_argument("--resolution", type=int, default=None,
                        help="image side in px (default: 128, or the tiny shapes' 32)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    args = parser.parse_args(argv)
    results = {}
    for name in args.shapes:
        resolution = args.resolution or (SHAPES[name]["resolution"] if name.startswith("tiny") else 128)
        results[name] = check(name, resolution, getattr(torch, args.dtype))
        r = results[name]
        print(f"{name:10s} {'ok' if r['ok'] else 'FAILED'}: {r['family']}, {r['unet_parameters'] / 1e6:.0f} M UNet "
              f"parameters, {args.dtype} at {resolution} px; loss {r['loss']:.4f}; build "
              f"{r['seconds']['build']:.1f} s, train step {r['seconds']['train_step']:.1f} s, sample step "
              f"{r['seconds']['sample_step']:.1f} s; peak RSS {r['peak_rss_gb']:.1f} GB", flush=True)
    write_result("shape_check", {"checks": results})
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
