"""GPU check (issue 17): Stable Diffusion 1.5's architecture with random weights, no download.

    benchmarks/gpu_check.sh [--out DIR] [--repeats 3] [--steps 20]   # one GPU, about 8 minutes
    benchmarks/gpu_check.sh --dry-run                                # CPU, tiny shapes, seconds

Builds SD 1.5's UNet, VAE and text encoder and a ViT-L/14 CLIP from their published configs
(`benchmarks/base_shapes.py`) with random weights, in Hugging Face format, behind two local
profiles (float32 weights + bf16 autocast for training ours; bf16 weights for the rest), then
measures at 512 px, each figure the median [min, max] of `--repeats` interleaved rounds
(benchmarks/common.py) after a warm-up round, or, for training runs, with each run's own
first steps left out:
- train: ours' training step, Ray Train (1 worker, the project's loop) vs the bare loop on the
  same batches: samples/s and the ratio;
- baselines: Textual Inversion's and DreamBooth-LoRA's steps/s (the project's recipes);
- sampling: seconds per image of TamerPipeline (DDIM, `--sample-steps`, both guidances);
- embed: ViT-L/14 image embeddings, images/s with preprocessing and model-only.
Each section's figures are written to `<out>/gpu_check.json` as soon as they exist, so a run
cut short keeps what it measured; a section that fails records its error and the rest go on.
`--dry-run` does all of it on CPU with the tiny shapes: what the test suite runs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import (clocked, interleaved, paired, print_paired, print_summaries,
                               rates, summary, timed, write_result)
from benchmarks.base_shapes import SD15, TINY

NAME = "gpu_check"


# ---- models and data -------------------------------------------------------------------------
def build_models(folder: Path, shapes: dict) -> None:
    """`<folder>/sd` (a Stable Diffusion folder) and `<folder>/clip`, random weights, bf16 files."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              CLIPTextConfig, CLIPTextModel, CLIPTokenizerFast)

    from model.tiny import clip_tokenizer

    torch.manual_seed(0)
    tokenizer_dir = folder / "tokenizer"
    clip_tokenizer(folder / "tmp").save_pretrained(tokenizer_dir)  # the real CLIP BPE vocabulary
    tokenizer = CLIPTokenizerFast.from_pretrained(tokenizer_dir)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**shapes["vae"]), unet=UNet2DConditionModel(**shapes["unet"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**shapes["text_encoder"])),
        tokenizer=tokenizer, scheduler=DDPMScheduler.from_config(shapes["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.bfloat16).save_pretrained(folder / "sd", safe_serialization=True)
    clip = shapes["clip"]
    CLIPModel(CLIPConfig(text_config=clip["text"], vision_config=clip["vision"],
                         projection_dim=clip["projection_dim"])).to(torch.bfloat16).save_pretrained(
        folder / "clip", safe_serialization=True)
    side = clip["vision"]["image_size"]
    images = CLIPImageProcessor(size={"shortest_edge": side},
                                crop_size={"height": side, "width": side})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder / "clip")
    shutil.rmtree(tokenizer_dir)


def write_profile(folder: Path, name: str, resolution: int, device: str, dtype: str) -> Path:
    """A profile YAML over the built folders (captioner and DINO: the tiny ones, unused here)."""
    sd = str(folder / "sd")
    profile = {"name": name, "device": device, "dtype": dtype, "resolution": resolution, "roles": {
        "captioner": {"id": "tiny://captioner"}, "dino": {"id": "tiny://dino"},
        "clip": {"id": str(folder / "clip")}, "segmentation": None,
        **{role: {"id": sd, "subfolder": role}
           for role in ("text_encoder", "tokenizer", "unet", "vae", "scheduler")}}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def make_data(work: Path, resolution: int, objects: int):
    """Synth renders at the model's resolution, ingested: (store, source folder, image bytes)."""
    from storage.shards import ShardStore
    from tamer.config import IngestSettings
    from tamer.synth import generate
    from tasks.ingest import ingest_source

    generate(work / "src", n_objects=objects, views=4, size=resolution, seed=0,
             held_out_fraction=0.25)
    store = ShardStore(str(work / "data"))
    ingest_source(str(work / "src"), store, IngestSettings(executor="local"))
    return store, work / "src", store.read("images", ["image"]).column("image").to_pylist()


def first_subject(source: Path, work: Path):
    from storage.shards import ShardStore
    from tasks.eval_subjects import load_subjects

    return load_subjects(str(source), ShardStore(str(work / "subjects")), None, 1, 1).subjects[0]


# ---- sections --------------------------------------------------------------------------------
def train_section(profile: Path, store, device: str, args) -> dict:
    """Ray Train (1 worker) vs the bare loop: ours' training step, samples/s."""
    from benchmarks.train_throughput import bare_loop, ray_path
    from tamer.config import load_config
    from tasks.ray_runtime import ensure_ray
    from tasks.train_data import build_datasets, build_plan

    ensure_ray()
    cuda = device == "cuda"
    config = load_config(None, root=store.location.uri, **{
        "profile": str(profile), "train.steps": args.steps, "train.batch_size": args.batch_size,
        "train.checkpoint_every": args.steps, "train.log_every": 1, "train.num_workers": 1,
        "train.cpus_per_worker": 1, "train.use_gpu": cuda,
        "train.mixed_precision": "bf16" if cuda else "no"})
    datasets = build_datasets(store, build_plan(store), config.profile, config.train.data_cpus)
    runs = iter(range(10**6))
    samples = interleaved({
        "ray_train": lambda: ray_path(config, datasets, f"gpu-check-{next(runs)}")["samples_per_s"],
        "bare_loop": lambda: bare_loop(config, datasets, device)},
        args.repeats, warmup=0)  # each run leaves its own first steps out (WARMUP_STEPS)
    print_summaries(samples, "samples/s")
    print_paired("ray_train / bare_loop", paired(samples["ray_train"], samples["bare_loop"]))
    return {"batch_size": args.batch_size, "steps": args.steps,
            "mixed_precision": config.train.mixed_precision,
            "samples_per_s": {k: summary(v) for k, v in samples.items()},
            "ours_steps_per_s": summary([s / args.batch_size for s in samples["bare_loop"]]),
            "ray_vs_bare": paired(samples["ray_train"], samples["bare_loop"])}


def baselines_section(profile: Path, subject, work: Path, args) -> dict:
    """Textual Inversion's and DreamBooth-LoRA's steps/s (set-up excluded by differencing)."""
    from benchmarks.customization_cost import baseline_cost
    from model.profiles import load_profile
    from tamer.model_config import DreamBoothLoraConfig, TextualInversionConfig
    from tasks.methods import Context, DreamBoothLora, Sampling, TextualInversion

    loaded = load_profile(str(profile))
    sampling = Sampling(args.sample_steps, 7.5, 3.0, "ddim")

    def steps_per_s(method, config_cls) -> Callable[[], float]:
        make = lambda c: method(Context(loaded, sampling, work), c)  # noqa: E731
        return lambda: 1 / baseline_cost(make, config_cls, subject, args.steps)["seconds_per_step"]

    per_s = interleaved({"textual_inversion": steps_per_s(TextualInversion, TextualInversionConfig),
                         "dreambooth_lora": steps_per_s(DreamBoothLora, DreamBoothLoraConfig)},
                        args.repeats, warmup=0)  # set-up and first step cancel by differencing
    print_summaries(per_s, "steps/s")
    return {"measured_steps": args.steps, "batch_size": {
        "textual_inversion": TextualInversionConfig().batch_size,
        "dreambooth_lora": DreamBoothLoraConfig().batch_size},
        "steps_per_s": {k: summary(v) for k, v in per_s.items()}}


def sampling_section(profile: Path, subject, args) -> dict:
    """Seconds per image of TamerPipeline: DDIM, text and object guidance."""
    from diffusers import DDIMScheduler

    from model.tamer_model import TamerModel, TamerModelConfig

    pipe = TamerModel.from_profile(str(profile), TamerModelConfig()).pipe
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def one_image() -> None:
        pipe("a photo of a thing on the beach", object_image=subject.images[0],
             num_inference_steps=args.sample_steps, generator=torch.Generator().manual_seed(0))
        _sync()

    seconds = interleaved({"tamer_pipeline": clocked(one_image)}, args.repeats)
    print_summaries(seconds, "s/image")
    return {"inference_steps": args.sample_steps, "scheduler": "ddim",
            "seconds_per_image": summary(seconds["tamer_pipeline"])}


def embed_section(profile: Path, images: list[bytes], device: str, args) -> dict:
    """The embed stage's per-image work on a ViT-L/14-shaped CLIP: images/s."""
    from model.embedding import ClipEmbedder
    from model.profiles import load_profile

    embedder = ClipEmbedder.from_profile(load_profile(str(profile)), device=device)
    batches = [images[i:i + args.embed_batch] for i in range(0, len(images), args.embed_batch)]
    pixels = [embedder.preprocess(batch) for batch in batches]

    def with_preprocessing() -> None:
        for batch in batches:
            embedder.embed_images(batch)
        _sync()

    def model_only() -> None:
        for batch in pixels:
            embedder.embed_pixels(batch)
        _sync()

    seconds = interleaved({"with_preprocessing": clocked(with_preprocessing),
                           "model_only": clocked(model_only)}, args.repeats)
    per_s = {name: rates(values, len(images)) for name, values in seconds.items()}
    print_summaries(per_s, "images/s")
    return {"images": len(images), "batch": args.embed_batch, "dim": embedder.dim,
            "images_per_s": {k: summary(v) for k, v in per_s.items()}}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---- the run ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, seconds")
    parser.add_argument("--out", default=None, help="folder of gpu_check.json; default "
                        "benchmarks/results/ ($TAMER_BENCH_RESULTS)")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (dry run: 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per measure (default 20; dry run: 7)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 4 (dry run: 2)")
    parser.add_argument("--sample-steps", type=int, default=None, help="default 50 (dry: 2)")
    parser.add_argument("--embed-batch", type=int, default=64)
    parser.add_argument("--objects", type=int, default=None, help="default 8 (dry run: 2)")
    parser.add_argument("--sections", default="train,baselines,sampling,embed")
    args = parser.parse_args(argv)
    dry = args.dry_run
    defaults = {"repeats": 1 if dry else 3, "steps": 7 if dry else 20,
                "batch_size": 2 if dry else 4, "sample_steps": 2 if dry else 50,
                "objects": 2 if dry else 8}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run, or on a GPU machine")
    device = "cpu" if dry else "cuda"
    shapes = TINY if dry else SD15

    work = Path(tempfile.mkdtemp(prefix="tamer-gpu-check-"))
    result: dict[str, Any] = {"dry_run": dry, "device": device,
                              "shapes": "tiny" if dry else "sd15 + clip-vit-l-14 (random)",
                              "resolution": shapes["resolution"], "repeats": args.repeats,
                              "sections": {}, "errors": {}}
    try:
        build_models(work / "models", shapes)
        half = "float32" if dry else "bfloat16"
        train_profile = write_profile(work / "models", "check-train", shapes["resolution"],
                                      device, "float32")
        infer_profile = write_profile(work / "models", "check", shapes["resolution"], device, half)
        store, source, images = make_data(work, shapes["resolution"], args.objects)
        subject = first_subject(source, work)
        sections = {
            "train": lambda: train_section(train_profile, store, device, args),
            "baselines": lambda: baselines_section(infer_profile, subject, work, args),
            "sampling": lambda: sampling_section(infer_profile, subject, args),
            "embed": lambda: embed_section(infer_profile, images, device, args),
        }
        for name in args.sections.split(","):
            print(f"[{name}]")
            try:
                seconds, result["sections"][name] = timed(sections[name])
                result["sections"][name]["section_seconds"] = seconds
            except Exception:  # noqa: BLE001 - a failed section is recorded; the others still run
                result["errors"][name] = traceback.format_exc(limit=8)
                print(result["errors"][name])
            write_result(NAME, result, Path(args.out) if args.out else None)
            _free()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
