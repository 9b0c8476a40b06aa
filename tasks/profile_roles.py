"""The `synth` profile's recipe: what each role trains on, with which architecture and budget,
and how a trained role is written as a Hugging Face folder the profile loads.

Roles train in `ROLE_CHAINS`, side by side; the base reads the CLIP folder written before it in
its chain (its text encoder starts from CLIP's text tower). Every role is a `model.fit.Job` built from renders of
`tamer.synth_world` (a pure function of the recipe's seed), so `tasks/profile_training.py` can
run it under Ray Train, checkpoint it and resume it after a kill.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from transformers import (BlipConfig, BlipProcessor, CLIPConfig, CLIPProcessor,
                          SegformerConfig, SegformerImageProcessor, ViTConfig, ViTImageProcessor)

from model import pixel_base
from model.conv_stem import load_clip
from model.fit import Job
from model.role_training import captioner_job, clip_job, identity_vit_job, oracle_job, segmentation_job, tower_job
from model.tiny import RECIPES as TINY_RECIPES
from model.tiny import blip_tokenizer, ensure_built
from tamer.synth import FORMAT_VERSION
from tamer.synth_world import (IDENTITY_KEYS, KEYS, STUDIO, VOCAB, Renders, attribute_prompts, caption,
                               caption_variants, class_prompt, random_subjects, render_views, scene_phrase,
                               split_subjects)

ROLE_ORDER = ("oracle", "clip", "captioner", "segmentation", "dino", "base")
WORD_KEYS = ("shape", "primary", "texture")  # what CLIP's word loss classifies (the measured zero-shot attributes)
# Chains of roles that can train side by side, one after the other within a chain: only the base
# reads another role's folder (CLIP's). On the full recipe at one thread each the two take about
# 80 and 86 min (README, "From scratch"), against about 165 for all six in one chain.
ROLE_CHAINS = (("clip", "base"), ("oracle", "captioner", "segmentation", "dino"))
# The folders each role writes under the profile directory (the base writes five).
ROLE_FOLDERS = {"oracle": ("oracle",), "clip": ("clip",), "captioner": ("captioner",),
                "segmentation": ("segmentation",), "dino": ("dino",),
                "base": ("text_encoder", "tokenizer", "unet", "vae", "scheduler")}


@dataclass(frozen=True)
class Recipe:
    """Sizes and budgets. The oracle and CLIP see many identities with few views each (with
    3000 objects x 4 views the oracle overfit identities); the base sees the training split's
    identities only, so held-out synth objects stay unseen by everything that generates."""

    size: int = 32
    seed: int = 0
    world_objects: int = 8000
    world_views: int = 2
    oracle_steps: int = 3000
    oracle_batch: int = 64
    oracle_width: int = 24
    # v10: 1,600 contrastive steps (800 before): what the stem's tower reads, the text has to
    # be tied to, and a contrastive step is cheap (800 took 11 min at one thread).
    clip_steps: int = 1600
    clip_batch: int = 128
    # Width of the ViT image towers (CLIP's, the captioner's, dino's). At 64 (v7) a CLIP tower
    # phase of 6,000 steps read held-out shape 0.53, at 128 0.74, 6 layers of 64: 0.64
    # (README, "Tower width").
    clip_vision_width: int = 128
    # Channels of a convolutional stem in place of the image towers' 4 px patch embedding
    # (`model.conv_stem`); () = the patch embedding. In CLIP's tower phase (width 128, every
    # label + masks, 3,000-step schedule) it read held-out shape 0.94 at the end, the patch
    # embedding 0.62 (README, "A convolutional stem").
    clip_conv_stem: tuple[int, ...] = (32, 64, 128)
    clip_caption_variants: int = 8
    # How often a partial caption names its texture by the attribute vocabulary's phrase
    # ("polka-dotted", `tamer.synth_world.TEXTURE_PHRASES`) instead of the world's word; 0 = never (v11).
    clip_texture_phrases: float = 0.5
    # Weight of zero-shot classification among the world's own short captions for shape,
    # primary colour and texture in CLIP's contrastive phase (`model.role_training.word_loss`);
    # 0 = contrastive and heads only (v10, v11).
    clip_word_loss: float = 1.0
    # The word loss also offers `tamer.synth_world.UNRENDERED_WORDS` ("a black thing", "a dog"),
    # the vocabulary's real-object words, as wrong classes; False = the world's values only (v11).
    clip_word_negatives: bool = True
    # A first phase that trains the image tower alone on every label and the masks
    # (`model.role_training.tower_job`); 0 = none. With the stem a step costs about 1.4x the
    # patch embedding's; 4,000 of them take about what 6,000 took without it.
    clip_tower_steps: int = 4000
    clip_tower_batch: int = 64
    captioner_steps: int = 1200  # 600 before v10: 2,100 named the shape 0.51 against 0.40 (README)
    captioner_batch: int = 32
    captioner_width: int = 64
    captioner_tower_steps: int = 4000  # as `clip_tower_steps`, for BLIP's vision model
    captioner_tower_batch: int = 64
    captioner_freeze_tower: bool = True  # captioning leaves the tower phase's vision model as it is
    captioner_vision_width: int = 128  # its text keeps `captioner_width`
    captioner_conv_stem: tuple[int, ...] = (32, 64, 128)  # as `clip_conv_stem`
    # The captioner's tokenizer: "bert", all of BERT's 30,524 WordPiece tokens (v12 and before),
    # or "captions", the pieces of the world's captions only (`model.tiny.blip_tokenizer`): the
    # output layer over 3x10^4 tokens was most of a captioning step.
    captioner_vocab: str = "captions"
    segmentation_steps: int = 600
    segmentation_batch: int = 32
    dino_steps: int = 4000  # 6,000 before the stem (v10), which costs about 1.4x a step
    dino_batch: int = 64
    dino_masks: bool = True  # per-patch mask supervision beside the identity labels
    dino_width: int = 128
    dino_conv_stem: tuple[int, ...] = (32, 64, 128)  # as `clip_conv_stem`
    # Weight of the same-object contrastive term on the CLS token (two views of each object per
    # batch, `model.role_training.identity_contrastive_loss`); 0 = attribute labels only (v9).
    dino_contrastive: float = 1.0
    base_objects: int = 600
    base_views: int = 6
    held_out: int = 8
    base_steps: int = 4000
    base_batch: int = 16
    base_text_levels: int = 2  # cross-attention at 8 and 16 px (model.pixel_base.build_unet)
    base_attention_heads: int = 1
    # Scene attributes the base's renders and prompts hold at the studio's value
    # (`tamer.synth_world.STUDIO`); the others (the background) vary.
    base_held_scene: tuple[str, ...] = ("position", "scale", "rotation", "lighting")
    checkpoint_every: int = 500
    # Stored precision of the exported weights (checkpoints stay float32); profiles load them in
    # their own dtype. float16 halves the folder (two 49408-token embeddings are most of it).
    export_dtype: str = "float16"

    def __post_init__(self) -> None:
        # A recipe read back from provenance JSON carries a list; the recipe is hashed (cached renders).
        for name in ("base_held_scene", "clip_conv_stem", "captioner_conv_stem", "dino_conv_stem"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def base_scene(self) -> dict[str, str]:
        """The scene attributes every base render and base prompt holds, with their values."""
        return {k: STUDIO[k] for k in self.base_held_scene}

    def example_prompt(self) -> str:
        """A prompt in the form the base learned, "{}" for the object (the written profile's)."""
        return "a {}, " + scene_phrase({**self.base_scene(), "background": "grass"})

    def fingerprint(self, role: str | None = None) -> str:
        """What decides the trained weights besides the code: the recipe (or, for one role, the
        fields that role reads, so a new base budget keeps the finished oracle) and the synth
        format. `checkpoint_every` never counts: a resumed run reaches the same weights."""
        fields = {k: v for k, v in asdict(self).items()
                  if k != "checkpoint_every" and not (k in _NEUTRAL and _NEUTRAL[k] == v)}
        if role is not None:
            fields = {k: v for k, v in fields.items() if k in _SHARED_FIELDS or k.startswith(_ROLE_FIELDS[role])}
        blob = json.dumps({"recipe": fields, "synth_format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_SHARED_FIELDS = {"size", "seed", "world_objects", "world_views", "export_dtype"}
# Fields added after a profile shipped, at the value that reproduces it (what the code did
# before the field existed): at that value they stay out of the fingerprint, so the shipped
# profile still matches its recipe.
_NEUTRAL = {"clip_vision_width": 64, "captioner_vision_width": 64, "dino_width": 64, "clip_conv_stem": (),
            "captioner_conv_stem": (), "dino_conv_stem": (), "dino_contrastive": 0.0, "clip_word_loss": 0.0,
            "clip_texture_phrases": 0.0, "clip_word_negatives": False, "captioner_vocab": "bert"}
# The base reads CLIP's folder (its text encoder starts there), so CLIP's fields are the base's too.
_ROLE_FIELDS = {"oracle": ("oracle_",), "clip": ("clip_",), "captioner": ("captioner_",),
                "segmentation": ("segmentation_",), "dino": ("dino_",), "base": ("base_", "held_out", "clip_")}


FULL = Recipe()
# Every role runs, nothing is trained to quality: what the test suite runs (seconds per role).
SMOKE = Recipe(world_objects=60, oracle_steps=6, oracle_batch=8, oracle_width=8, clip_steps=6, clip_batch=8,
               clip_caption_variants=2, clip_tower_steps=4, clip_tower_batch=4, captioner_steps=4, captioner_batch=4,
               captioner_width=16, captioner_tower_steps=4, captioner_tower_batch=4, segmentation_steps=4,
               segmentation_batch=4, dino_steps=4, dino_batch=4, base_objects=8, base_views=2, held_out=2,
               base_steps=6, base_batch=4, checkpoint_every=3, clip_conv_stem=(8, 16, 16),
               captioner_conv_stem=(8, 16, 16), dino_conv_stem=(8, 16, 16), dino_contrastive=1.0, clip_word_loss=1.0,
               clip_texture_phrases=0.5, clip_word_negatives=True)
RECIPES = {"full": FULL, "smoke": SMOKE}


def recipe(name: str, seed: int = 0) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r} (known: {sorted(RECIPES)})")
    return replace(RECIPES[name], seed=seed)


@lru_cache(maxsize=2)
def world(r: Recipe) -> Renders:
    """Random identities in random scenes: what the oracle, CLIP, captioner and segmentation see."""
    return render_views(random_subjects(r.world_objects, r.seed + 1), r.world_views, r.size, r.seed + 1)


@lru_cache(maxsize=2)
def base_world(r: Recipe) -> Renders:
    """The training split's identities, `base_views` scenes each (in the base's scene set):
    what the base draws."""
    train, _ = split_subjects(r.base_objects, r.held_out, r.seed)
    return render_views(train, r.base_views, r.size, r.seed + 3, r.base_scene())


def clip_config(size: int, vision_width: int = 64, conv_stem: tuple[int, ...] = ()) -> CLIPConfig:
    """Small enough for minutes of CPU training; the text width is also the UNet's
    cross-attention width, since the base's text encoder starts from this text tower.
    `conv_stem`: `model.conv_stem`'s channels (a config field only where there is one)."""
    vision = dict(image_size=size, patch_size=4, **_transformer(vision_width), **_stem(conv_stem))
    text = dict(max_position_embeddings=77, **_transformer(64))
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def _transformer(width: int, layers: int = 3) -> dict:
    """The shape every small transformer here shares: MLP twice the width, 4 heads."""
    return dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4)


def clip_processor(size: int) -> CLIPProcessor:
    """The tiny profile's processor (real CLIP BPE tokenizer), resized to `size`."""
    processor = CLIPProcessor.from_pretrained(ensure_built("clip"))
    processor.image_processor.size = {"shortest_edge": size}
    processor.image_processor.crop_size = {"height": size, "width": size}
    return processor


def _stem(conv_stem: tuple[int, ...]) -> dict:
    return {"conv_stem": list(conv_stem)} if conv_stem else {}


def captioner_config(size: int, width: int, vision_width: int | None = None,
                     conv_stem: tuple[int, ...] = (), tokenizer=None) -> BlipConfig:
    """BLIP with the tiny captioner's text settings at `width` (the vision model at
    `vision_width`, default the same), its vocabulary `tokenizer`'s (default the tiny one's,
    BERT WordPiece + [DEC]): the tiny width of 32 learned the language and the background in
    600 steps but not the object."""
    text = BlipConfig.from_pretrained(ensure_built("captioner")).text_config.to_dict()
    if tokenizer is not None:
        text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
                    eos_token_id=tokenizer.sep_token_id)
    return BlipConfig(text_config={**text, **_transformer(width)},
                      vision_config=dict(image_size=size, patch_size=4, **_transformer(vision_width or width),
                                         **_stem(conv_stem)),
                      projection_dim=width)


def dino_config(size: int, width: int = 64, conv_stem: tuple[int, ...] = ()) -> ViTConfig:
    """ViT-S/16's shape scaled to 32 px renders: 4 px patches, 4 layers of `width`."""
    return ViTConfig(image_size=size, patch_size=4, **_transformer(width, layers=4), **_stem(conv_stem))


@lru_cache(maxsize=2)
def captioner_processor(r: Recipe) -> BlipProcessor:
    """The tiny captioner's processor at the recipe's size, its tokenizer cut to the world's
    caption pieces where the recipe says so (`Recipe.captioner_vocab`). Cached: the tower phase,
    the captioning phase and the export all ask for it, and cutting tokenizes every caption."""
    if r.captioner_vocab not in ("bert", "captions"):
        raise ValueError(f"unknown captioner_vocab {r.captioner_vocab!r} (known: bert, captions)")
    processor = BlipProcessor.from_pretrained(ensure_built("captioner"))
    processor.image_processor.size = {"height": r.size, "width": r.size}
    if r.captioner_vocab == "captions":
        processor = BlipProcessor(image_processor=processor.image_processor,
                                  tokenizer=blip_tokenizer(captions_of(world(r))))
    return processor


def dino_processor(size: int) -> ViTImageProcessor:
    return ViTImageProcessor(size={"height": size, "width": size})


def captions_of(data: Renders) -> list[str]:
    return [caption(data.identity(i), data.scenes[i]) for i in range(len(data))]


def clip_captions(data: Renders, r: Recipe) -> list[list[str]]:
    """Per row: its full caption and partial ones (`caption_variants`), drawn from the recipe's seed."""
    rng = np.random.default_rng(r.seed + 5)
    return [caption_variants(data.identity(i), data.scenes[i], r.clip_caption_variants, rng, r.clip_texture_phrases)
            for i in range(len(data))]


def _classes(keys: tuple[str, ...]) -> list[int]:
    """How many values each label column takes (the heads' widths)."""
    return [len(VOCAB[key]) for key in keys]


def role_jobs(role: str, r: Recipe, out: Path) -> list[Job]:
    """The jobs that train `role`, run in order on one model: the image tower alone first where
    the recipe gives it steps (`clip_tower_steps`, `captioner_tower_steps`), then `role_job`,
    whose modules are exported."""
    main = role_job(role, r, out)
    steps, batch = {"clip": (r.clip_tower_steps, r.clip_tower_batch),
                    "captioner": (r.captioner_tower_steps, r.captioner_tower_batch)}.get(role, (0, 0))
    if not steps:
        return [main]
    data = world(r)
    processor = clip_processor(r.size) if role == "clip" else captioner_processor(r)
    tower = tower_job(main.modules["model"].vision_model, processor.image_processor, data.pixels, data.labels,
                      _classes(KEYS), steps, batch, r.seed, data.masks)
    return [tower, main]


def role_job(role: str, r: Recipe, out: Path) -> Job:
    """The job that trains `role` (the base reads `out/clip`, written before it)."""
    if role == "oracle":
        data = world(r)
        return oracle_job(data.pixels, data.labels, {key: list(VOCAB[key]) for key in KEYS}, r.oracle_steps,
                          r.oracle_batch, r.seed, r.oracle_width)
    if role == "clip":
        data = world(r)
        return clip_job(clip_config(r.size, r.clip_vision_width, r.clip_conv_stem), clip_processor(r.size), data.pixels,
                        clip_captions(data, r), data.labels, _classes(KEYS), r.clip_steps, r.clip_batch, r.seed,
                        words=[(KEYS.index(key), attribute_prompts(key, r.clip_word_negatives)) for key in WORD_KEYS],
                        word_weight=r.clip_word_loss)
    if role == "captioner":
        data, processor = world(r), captioner_processor(r)
        return captioner_job(captioner_config(r.size, r.captioner_width, r.captioner_vision_width,
                                              r.captioner_conv_stem, processor.tokenizer),
                             processor, data.pixels, captions_of(data), r.captioner_steps,
                             r.captioner_batch, 3e-3, r.seed, freeze_vision=r.captioner_freeze_tower)
    if role == "segmentation":
        data = world(r)
        return segmentation_job(_segmentation_config(), _segmentation_processor(r.size), data.pixels, data.masks,
                                r.segmentation_steps, r.segmentation_batch, 3e-3, r.seed)
    if role == "dino":
        data = world(r)
        columns = [KEYS.index(key) for key in IDENTITY_KEYS]
        return identity_vit_job(dino_config(r.size, r.dino_width, r.dino_conv_stem), dino_processor(r.size),
                                data.pixels, data.labels[:, columns], _classes(IDENTITY_KEYS), r.dino_steps,
                                r.dino_batch, r.seed, masks=data.masks if r.dino_masks else None,
                                owner=data.subject, contrastive=r.dino_contrastive)
    if role == "base":
        data = base_world(r)
        clip = load_clip(out / "clip")
        rows = range(len(data))
        return pixel_base.base_job(data.pixels, captions_of(data),
                                   [class_prompt(data.identity(i), data.scenes[i]) for i in rows],
                                   pixel_base.text_encoder_from_clip(clip), clip_processor(r.size).tokenizer,
                                   r.base_steps, r.base_batch, r.seed, r.base_text_levels,
                                   r.base_attention_heads)
    raise ValueError(f"unknown role {role!r} (known: {list(ROLE_ORDER)})")


def export_role(role: str, job: Job, r: Recipe, out: Path) -> None:
    """Write the trained role as Hugging Face folders under `out` (safetensors)."""
    def save(name: str, model: torch.nn.Module, processor=None) -> None:
        model.eval().to(getattr(torch, r.export_dtype)).save_pretrained(out / name, safe_serialization=True)
        if processor is not None:
            processor.save_pretrained(out / name)

    model = job.modules.get("model")
    if role == "oracle":
        save("oracle", model)
    elif role == "clip":
        save("clip", model, clip_processor(r.size))
    elif role == "captioner":
        save("captioner", model, captioner_processor(r))
    elif role == "segmentation":
        save("segmentation", model, _segmentation_processor(r.size))
    elif role == "dino":
        save("dino", model, dino_processor(r.size))
    elif role == "base":
        save("unet", job.modules["unet"])
        save("text_encoder", job.modules["text_encoder"])
        clip_processor(r.size).tokenizer.save_pretrained(out / "tokenizer")
        save("vae", pixel_base.PassThroughVAE())
        pixel_base.scheduler().save_pretrained(out / "scheduler")
    else:
        raise ValueError(f"unknown role {role!r}")


def _segmentation_config() -> SegformerConfig:
    spec = dict(TINY_RECIPES["segmentation"])
    id2label = {int(k): v for k, v in spec.pop("id2label").items()}
    return SegformerConfig(**spec, id2label=id2label, label2id={v: k for k, v in id2label.items()})


def _segmentation_processor(size: int) -> SegformerImageProcessor:
    return SegformerImageProcessor(size={"height": size, "width": size})
