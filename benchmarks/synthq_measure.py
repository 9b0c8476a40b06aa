"""Scoring for the synth-quality benchmark: oracle identity / prompt accuracy and in-domain
CLIP-I / CLIP-T per generated image, then per-method means with 95% bootstrap intervals over
held-out objects (objects are the independent units, as in the evaluation report).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPProcessor

from model.oracle import AttributeOracle
from model.role_training import processor_pixels
from tamer.synth_world import IDENTITY_KEYS, KEYS, SCENE_KEYS, Renders, caption
from tasks.eval_report import bootstrap_interval

MEASURES = ("identity_acc", "identity_exact", "prompt_acc", "clip_i", "clip_t")
HITS = tuple(f"{key}_hit" for key in KEYS)  # per-attribute oracle agreement, also summarized


def readable(oracle_accuracy: dict[str, float], target: float) -> tuple[list[str], list[str]]:
    """(identity keys, scene keys) the oracle reads at >= target on fresh renders: only those
    count towards identity and prompt accuracy; the others are still reported per attribute.
    A group with no readable key counts all of its keys (and the run does not count)."""
    def group(keys: tuple[str, ...]) -> list[str]:
        return [k for k in keys if oracle_accuracy[k] >= target] or list(keys)
    return group(IDENTITY_KEYS), group(SCENE_KEYS)


@torch.no_grad()
def score(oracle: AttributeOracle, clip: CLIPModel, processor: CLIPProcessor, images: torch.Tensor,
          reference: torch.Tensor, truth: torch.Tensor, prompts: list[str],
          counted: tuple[list[str], list[str]]) -> list[dict[str, float]]:
    """Per image (N, 3, S, S) in [-1, 1], against its reference image (N, 3, S, S), the wanted
    labels (N, len(KEYS)) (identity of the reference, scene of the prompt) and the class-noun
    prompts: identity accuracy (mean over the counted identity attributes), exact identity,
    prompt accuracy (mean over the counted scene attributes), CLIP-I (cosine to the
    reference), CLIP-T (to the prompt) and every attribute's hit."""
    identity_columns = [KEYS.index(k) for k in counted[0]]
    scene_columns = [KEYS.index(k) for k in counted[1]]
    hits = (oracle.predict(images) == truth).float()  # (N, len(KEYS))
    def embed(pixels: torch.Tensor) -> torch.Tensor:
        inputs = processor_pixels(pixels, processor.image_processor)
        return F.normalize(clip.get_image_features(pixel_values=inputs), dim=-1)

    image_emb, ref_emb = embed(images), embed(reference)
    tokens = processor.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    text_emb = F.normalize(clip.get_text_features(**tokens), dim=-1)
    clip_i, clip_t = (image_emb * ref_emb).sum(-1), (image_emb * text_emb).sum(-1)
    return [{"identity_acc": float(hits[n, identity_columns].mean()),
             "identity_exact": float(hits[n, identity_columns].min()),
             "prompt_acc": float(hits[n, scene_columns].mean()), "clip_i": float(clip_i[n]),
             "clip_t": float(clip_t[n]), **{hit: float(hits[n, k]) for k, hit in enumerate(HITS)}}
            for n in range(len(images))]


def _by_method_and_object(rows: list[dict]) -> dict[str, dict[int, list[dict]]]:
    """Scored rows grouped by method, then by held-out object (the bootstrap's unit)."""
    grouped: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[row["method"]][row["object"]].append(row)
    return grouped


def summarize(rows: list[dict], resamples: int = 2000) -> dict[str, dict]:
    """Per method: each measure's mean over objects (of per-object means) with its interval."""
    summary = {}
    for method, objects in _by_method_and_object(rows).items():
        entry: dict[str, object] = {"images": sum(map(len, objects.values())), "objects": len(objects)}
        for measure in MEASURES + HITS:
            per_object = np.array([np.mean([r[measure] for r in group]) for group in objects.values()])
            entry[measure] = float(per_object.mean())
            entry[f"{measure}_ci"] = bootstrap_interval(per_object, resamples)
        summary[method] = entry
    return summary


def paired_differences(rows: list[dict], method: str = "ours", measures: tuple[str, ...] = ("identity_acc", "prompt_acc", "clip_i"),
                       resamples: int = 2000) -> dict[str, dict[str, dict]]:
    """`method` minus every other method, object by object (both sides sampled the same held-out
    objects, prompts and seeds): per other method and measure, the mean difference and its 95%
    bootstrap interval over objects. "Ours beats X" is read here (lower bound above 0): two
    per-method intervals can overlap while every object's difference has one sign."""
    means = {name: {obj: {m: float(np.mean([r[m] for r in group])) for m in measures}
                     for obj, group in objects.items()}
             for name, objects in _by_method_and_object(rows).items()}
    ours = means[method]
    differences = {}
    for other, theirs in means.items():
        if other == method:
            continue
        shared = sorted(set(ours) & set(theirs))
        differences[other] = {}
        for m in measures:
            per_object = np.array([ours[o][m] - theirs[o][m] for o in shared])
            low, high = bootstrap_interval(per_object, resamples)
            differences[other][m] = {"mean": float(per_object.mean()), "ci": [low, high], "objects": len(shared)}
    return differences


@torch.no_grad()
def retrieval_accuracy(model: CLIPModel, processor: CLIPProcessor, data: Renders, n: int = 64) -> float:
    """Image -> caption top-1 among n pairs: a sanity figure that the CLIP learned the world."""
    n = min(n, len(data))
    captions = [caption(data.identity(i), data.scenes[i]) for i in range(n)]
    tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
    inputs = processor_pixels(data.pixels[:n], processor.image_processor)
    images = F.normalize(model.get_image_features(pixel_values=inputs), dim=-1)
    texts = F.normalize(model.get_text_features(**tokens), dim=-1)
    return float(((images @ texts.T).argmax(1) == torch.arange(n)).float().mean())
