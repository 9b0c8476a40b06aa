"""What a trained `synth` profile is worth, measured on fresh renders of identities and scenes
drawn apart from training (another seed): the oracle's accuracy, CLIP's zero-shot attribute
accuracy through the project's own vocabulary (what captioning uses), the captioner's agreement
with ground truth, segmentation IoU, and the oracle's reading of the base's text-only samples.
Each figure goes into the profile's provenance beside the bar it is judged against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import BlipProcessor, CLIPProcessor

from model.attributes import AttributeScorer, load_vocabulary, top, truth_from_meta
from model.attributes import accuracy as attribute_accuracy
from model.captioning import Captioner
from model.conv_stem import load_captioner, load_clip, load_vit
from model.oracle import AttributeOracle
from model.pixel_base import sd_pipeline
from model.role_training import processor_pixels
from tamer.config import CONFIG_DIR
from tamer.synth import COLORS, SCENE_PHRASES, SHAPES
from tamer.synth_world import (KEYS, SCENE_KEYS, Renders, class_prompt, eval_scenes, labels, random_subjects,
                               render_views, split_subjects)
from tasks.profile_roles import Recipe

BARS = {"oracle": 0.95, "clip_zero_shot": 0.8, "captioner": 0.8, "base_shape": 0.7, "base_scene": 0.9}
FRESH_SEED = 7919  # renders no role trained on
GUIDANCE = 2.0  # the base's text CFG here and in the written profile (SD's 7.5 saturates a 32 px pixel base)
# The base's sampler here and in the written profile (`model.sampling`): its own DDPM schedule,
# ancestral; with DDIM its samples lose the held tilt and light (README, "Sampler").
SAMPLER = "default"
NEAR_DUPLICATE = 0.88  # the CLIP's near-duplicate cosine here and in the written profile (swept on v9: README)
# The dino role's identity-edge cosine here and in the written profile (the embed stage's default
# grouping: mirror-averaged vectors, 4 neighbours averaged, mutual 5-NN): the one whose lower of
# purity and pair recall was highest on renders other than the measure's (v11 sweep: README).
GROUP_THRESHOLD = 0.9
GROUP_SWEEP = (0.8, 0.85, 0.88, 0.9, 0.91, 0.92, 0.94, 0.96)  # grouping also reported at these, to show the trade
# Ours' object CFG in the written profile: at 3.0 the main job's samples lost their prompted
# backgrounds to dark fields (README, "Quickstart").
OBJECT_GUIDANCE = 2.0


@dataclass(frozen=True)
class Sizes:
    """How much each measure renders and samples. Not part of the recipe: sizes change the
    figures' spread, never the weights."""

    fresh: int = 400  # identities, one view each: oracle, zero-shot, captions, segmentation
    same_object: int = 200  # identities, two views each
    duplicates: int = 100  # identities for near-duplicates and groups
    duplicate_scenes: int = 3
    base_scenes: int = 8  # scenes per held-out identity for the base's text-only samples
    base_steps: int = 25  # sampling steps


# Per recipe name; the smoke recipe's weights are untrained, its measures only have to run.
SIZES = {"full": Sizes(), "smoke": Sizes(fresh=16, same_object=8, duplicates=6, duplicate_scenes=2, base_scenes=2,
                                         base_steps=3)}


def fresh_renders(r: Recipe, objects: int = Sizes.fresh) -> Renders:
    return render_views(random_subjects(objects, r.seed + FRESH_SEED), 1, r.size, r.seed + FRESH_SEED)


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in array]


def per_key(predicted: torch.Tensor, truth: torch.Tensor, keys: tuple[str, ...] = KEYS) -> dict[str, float]:
    """Per-attribute exact-match rate of (N, len(keys)) index tensors, in float64: in float32,
    380 of 400 is 0.9499999881 and fell below a 0.95 bar that it meets."""
    return {key: float((predicted[:, k] == truth[:, k]).double().mean()) for k, key in enumerate(keys)}


@torch.no_grad()
def measure_profile(out: Path, r: Recipe, sizes: Sizes = Sizes()) -> dict:
    fresh = fresh_renders(r, sizes.fresh)
    images = to_images(fresh.pixels)
    oracle = AttributeOracle.from_pretrained(out / "oracle").eval()
    return {"oracle_accuracy": per_key(oracle.predict(fresh.pixels), fresh.labels),
            "clip_zero_shot": clip_zero_shot(out / "clip", fresh, images),
            "captioner_agreement": captioner_agreement(out / "captioner", fresh, images),
            "segmentation_iou": segmentation_iou(out / "segmentation", fresh),
            "same_object_top1": same_object_top1(out, r, sizes.same_object),
            "near_duplicates_and_groups": duplicate_and_group_quality(out, r, sizes.duplicates, sizes.duplicate_scenes),
            "base_text_only": base_accuracy(out, oracle, r, sizes.base_scenes, sizes.base_steps),
            "bars": BARS}


def clip_zero_shot(folder: Path, data: Renders, images: list[Image.Image]) -> dict[str, float]:
    """Top-1 accuracy per vocabulary group with a truth path (configs/attributes.yaml)."""
    vocabulary = load_vocabulary(CONFIG_DIR / "attributes.yaml")
    scorer = AttributeScorer(load_clip(folder).eval(),
                             CLIPProcessor.from_pretrained(folder), vocabulary)
    predicted, truth = {}, {}
    for start in range(0, len(images), 128):
        for offset, scores in enumerate(scorer(images[start:start + 128])):
            predicted[start + offset] = {group: value for group, (value, _) in top(scores).items()}
    for i in range(len(data)):
        meta = {"identity": data.identity(i).attributes(), "scene": data.scenes[i].attributes(),
                "class_name": data.identity(i).shape}
        truth[i] = truth_from_meta(meta, vocabulary)
    return {group: entry["accuracy"] for group, entry in attribute_accuracy(predicted, truth, vocabulary).items()}


def captioner_agreement(folder: Path, data: Renders, images: list[Image.Image]) -> dict[str, float]:
    """Share of raw captions naming the true shape, primary colour (the first colour said) and
    background phrase."""
    captioner = Captioner(load_captioner(folder).eval(),
                          BlipProcessor.from_pretrained(folder))
    said = [text for start in range(0, len(images), 64) for text in captioner(images[start:start + 64])]
    hits = {"shape": [], "primary": [], "background": []}
    for i, text in enumerate(said):
        identity, scene = data.identity(i), data.scenes[i]
        hits["shape"].append(_first(text, SHAPES) == identity.shape)
        hits["primary"].append(_first(text, tuple(COLORS)) == identity.primary)
        hits["background"].append(SCENE_PHRASES["background"][scene.background].lower() in text)
    return {key: float(np.mean(values)) for key, values in hits.items()}


def _first(text: str, words: tuple[str, ...]) -> str | None:
    found = [(m.start(), w) for w in words for m in re.finditer(rf"\b{re.escape(w)}\b", text)]
    return min(found)[1] if found else None


def segmentation_iou(folder: Path, data: Renders) -> float:
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    model = SegformerForSemanticSegmentation.from_pretrained(folder, use_safetensors=True).eval()
    processor = SegformerImageProcessor.from_pretrained(folder)
    logits = model(pixel_values=processor_pixels(data.pixels, processor)).logits
    side = data.pixels.shape[-1]
    predicted = torch.nn.functional.interpolate(logits, size=(side, side), mode="bilinear").argmax(1) == 1
    truth = data.masks[:, 0] > 0.5
    return float((predicted & truth).sum() / (predicted | truth).sum().clamp(min=1))


@torch.no_grad()
def same_object_top1(out: Path, r: Recipe, objects: int = Sizes.same_object) -> dict[str, float]:
    """Two fresh views of each of `objects` unseen identities: how often a view's nearest
    neighbour (cosine) among all other views is the other view of its object, with the `dino`
    role's CLS token (what the DINO score compares) and CLIP's image embedding (what
    near-duplicates, search and CLIP-I compare). Chance is 1 / (2 * objects - 1)."""
    from transformers import ViTImageProcessor

    from model.metrics import Scorer

    data = render_views(random_subjects(objects, r.seed + FRESH_SEED + 1), 2, r.size, r.seed + FRESH_SEED + 1)
    scorer = Scorer(load_clip(out / "clip"), CLIPProcessor.from_pretrained(out / "clip"),
                    load_vit(out / "dino"),
                    ViTImageProcessor.from_pretrained(out / "dino"))
    images = to_images(data.pixels)
    return {"dino": _top1_same(scorer.dino_images(images), data.subject),
            "clip": _top1_same(scorer.clip_images(images), data.subject)}


@torch.no_grad()
def duplicate_and_group_quality(out: Path, r: Recipe, objects: int = Sizes.duplicates,
                                scenes: int = Sizes.duplicate_scenes) -> dict:
    """The embed stage's near-duplicate pairs (at `NEAR_DUPLICATE`, on CLIP's image vectors) and
    identity groups (at `GROUP_THRESHOLD`, on the dino role's identity vectors, as the stage
    computes both), on `objects` unseen identities x `scenes` scenes x 2 renders of each scene
    (another jitter): a true near-duplicate is the same object in the same scene, a true group
    the object in all of them."""
    from dataclasses import replace

    from transformers import ViTImageProcessor

    from model.embedding import IdentityEmbedder
    from tamer.config import EmbedSettings
    from tamer.synth import render
    from tamer.synth_world import bench_scene, to_tensor
    from tasks.pairs import grouping_quality, near_duplicate_pairs, propose_groups

    rng = np.random.default_rng([r.seed + FRESH_SEED, 0xD0])
    pixels, images, owner, where = [], [], [], []
    for k, subject in enumerate(random_subjects(objects, r.seed + FRESH_SEED + 2)):
        for s in range(scenes):
            scene = bench_scene(rng)
            for _ in range(2):
                image, _ = render(subject.identity, replace(scene, variation=int(rng.integers(2**31))), r.size)
                pixels.append(to_tensor(image))
                images.append(image)
                owner.append(k)
                where.append((k, s))
    clip = load_clip(out / "clip").eval()
    processor = CLIPProcessor.from_pretrained(out / "clip")
    inputs = processor_pixels(torch.stack(pixels), processor.image_processor)
    vectors = torch.nn.functional.normalize(clip.get_image_features(pixel_values=inputs), dim=-1).numpy()
    settings = EmbedSettings()
    pairs = near_duplicate_pairs(vectors, NEAR_DUPLICATE)
    true_found = sum(where[i] == where[j] for i, j, _ in pairs)
    identity = IdentityEmbedder(load_vit(out / "dino"), ViTImageProcessor.from_pretrained(out / "dino"))
    identity_vectors = identity.embed_pixels(identity.preprocess(images))

    def grouping(threshold: float) -> dict:
        groups = propose_groups(identity_vectors, threshold, settings.group_neighbors, settings.group_min_size,
                                settings.group_augment)
        return grouping_quality(list(groups), owner)

    chosen = grouping(GROUP_THRESHOLD)
    return {"near_duplicate_pairs": len(pairs), "near_duplicate_precision": true_found / len(pairs) if pairs else None,
            "near_duplicate_recall": true_found / (objects * scenes),
            "group_threshold": GROUP_THRESHOLD, "group_purity": chosen["purity"], "group_recall": chosen["recall"],
            "grouped_fraction": chosen["grouped_fraction"],
            "group_sweep": {str(t): {k: round(v, 4) for k, v in grouping(t).items() if k in ("purity", "recall")}
                            for t in GROUP_SWEEP}}


def _top1_same(features: torch.Tensor, owner: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-2.0)
    return float((owner[similarity.argmax(1)] == owner).float().mean())


def base_prompts(r: Recipe, scenes: int = Sizes.base_scenes, scene_seed: int | None = None
                 ) -> tuple[list[str], torch.Tensor]:
    """Class prompts ("a star, on green grass, ...") for the identities the base never saw, in
    `scenes` scenes each of the base's scene set (drawn from `scene_seed`, default the recipe's),
    object by object, with their labels (N, len(KEYS))."""
    _, held_out = split_subjects(r.base_objects, r.held_out, r.seed)
    drawn = eval_scenes(scenes, r.seed if scene_seed is None else scene_seed, r.base_scene())
    pairs = [(s.identity, scene) for s in held_out for scene in drawn]
    return [class_prompt(i, s) for i, s in pairs], torch.tensor([labels(i, s) for i, s in pairs])


def base_accuracy(out: Path, oracle: AttributeOracle, r: Recipe, scenes: int = Sizes.base_scenes,
                  steps: int = Sizes.base_steps, guidance: float = GUIDANCE, sampler: str = SAMPLER) -> dict[str, float]:
    """The oracle's reading of the base's text-only samples of `base_prompts`: shape and every
    scene attribute."""
    prompts, truth = base_prompts(r, scenes)
    hits, _ = sample_accuracy(sd_pipeline(*load_base(out), sampler), oracle, prompts, truth, steps, guidance, r.seed)
    return {key: hits[key] for key in ("shape", *SCENE_KEYS)}


def load_base(out: Path):
    """The base's UNet, text encoder and tokenizer from a profile folder (safetensors only)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return (UNet2DConditionModel.from_pretrained(out / "unet", use_safetensors=True).eval(),
            CLIPTextModel.from_pretrained(out / "text_encoder", use_safetensors=True).eval(),
            CLIPTokenizer.from_pretrained(out / "tokenizer"))


@torch.no_grad()
def sample_accuracy(pipe, oracle: AttributeOracle, prompts: list[str], truth: torch.Tensor, steps: int,
                    guidance: float, seed: int) -> tuple[dict[str, float], torch.Tensor]:
    """Text-only samples of `prompts` read by the oracle: per-attribute agreement with `truth`
    (N, len(KEYS)); also returns the samples in [-1, 1]."""
    generators = [torch.Generator().manual_seed(seed + n) for n in range(len(prompts))]
    images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                  generator=generators).images * 2 - 1
    return per_key(oracle.predict(images.float().clamp(-1, 1)), truth), images
