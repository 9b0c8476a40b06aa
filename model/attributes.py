"""CLIP zero-shot attribute classifiers over a user-extensible vocabulary (configs/attributes.yaml).

Contract: `load_vocabulary(path)` validates the vocabulary; `AttributeScorer(clip, processor,
vocabulary)` embeds every value's prompts once, then `score(pixel_values)` gives, per image and
per group, a softmax over that group's values (so each group's probabilities sum to 1).
`accuracy` compares top values with ground truth (synth images carry it in `images.meta`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scores = dict[str, dict[str, float]]  # group -> value -> probability


class GroupSpec(BaseModel):
    """One attribute group: its values (optionally value -> phrase) and how to prompt CLIP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A list uses each value verbatim; a mapping gives the phrase used in prompts and captions
    # ("sky": "against a blue sky") while the value stays the label ground truth is compared to.
    values: list[str] | dict[str, str]
    prompts: list[str] | None = None  # templates with {value}; None = the vocabulary's default
    threshold: float | None = Field(None, gt=0.0, le=1.0)  # None = the vocabulary's threshold
    truth: str | None = None  # dotted path of this group's label in images.meta (synth)

    @field_validator("values")
    @classmethod
    def _several(cls, values: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        if len(values) < 2 or len(set(values)) != len(values):
            raise ValueError("a group needs at least two distinct values (softmax over one is 1)")
        return values

    def phrases(self) -> dict[str, str]:
        return dict(self.values) if isinstance(self.values, dict) else {v: v for v in self.values}


class Vocabulary(BaseModel):
    """Every attribute group CLIP scores, plus the probability a value needs to be named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.3, gt=0.0, le=1.0)
    prompts: list[str] = ["a photo of a {value} object."]
    groups: dict[str, GroupSpec]

    @model_validator(mode="after")
    def _prompts_have_slot(self) -> Vocabulary:
        for name, group in self.groups.items():
            for prompt in group.prompts or self.prompts:
                if "{value}" not in prompt:
                    raise ValueError(f"group {name!r}: prompt {prompt!r} has no {{value}} slot")
        return self

    def threshold_of(self, group: str) -> float:
        return self.groups[group].threshold or self.threshold

    def prompts_of(self, group: str) -> list[str]:
        return self.groups[group].prompts or self.prompts


def load_vocabulary(path: str | Path) -> Vocabulary:
    """Parse and validate a vocabulary YAML file (unknown keys fail, naming the field)."""
    return Vocabulary.model_validate(yaml.safe_load(Path(path).read_text()) or {})


class AttributeScorer:
    """A CLIP model plus the text embeddings of every value's prompts, computed once."""

    def __init__(self, model: Any, processor: Any, vocabulary: Vocabulary):
        self.model, self.processor, self.vocabulary = model, processor, vocabulary
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.values = {name: list(group.phrases()) for name, group in vocabulary.groups.items()}
        self.text_embeddings = {name: self._embed_group(name) for name in vocabulary.groups}

    @torch.inference_mode()
    def _embed_group(self, group: str) -> torch.Tensor:
        """(V, D): per value, the mean of its normalized prompt embeddings (prompt ensembling)."""
        phrases = list(self.vocabulary.groups[group].phrases().values())
        prompts = self.vocabulary.prompts_of(group)
        texts = [prompt.format(value=phrase) for phrase in phrases for prompt in prompts]
        tokens = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        features = _normalize(self.model.get_text_features(**tokens.to(self.device)))
        mean = features.view(len(phrases), len(prompts), -1).mean(dim=1)  # (V, D)
        return _normalize(mean)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, self.dtype)  # (B, 3, H, W)

    @torch.inference_mode()
    def score(self, pixel_values: torch.Tensor) -> list[Scores]:
        """Per image: group -> value -> probability, a softmax within each group."""
        image = _normalize(self.model.get_image_features(pixel_values=pixel_values))  # (B, D)
        scale = self.model.logit_scale.exp()
        per_group = {name: (scale * image @ text.T).float().softmax(dim=-1).cpu()  # (B, V)
                     for name, text in self.text_embeddings.items()}
        return [{name: dict(zip(self.values[name], probs[i].tolist()))
                 for name, probs in per_group.items()} for i in range(image.shape[0])]

    def __call__(self, images: Sequence[Image.Image]) -> list[Scores]:
        return self.score(self.preprocess(images))


def _normalize(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def top(scores: Scores) -> dict[str, tuple[str, float]]:
    """group -> (most probable value, its probability)."""
    return {group: max(values.items(), key=lambda item: item[1])
            for group, values in scores.items()}


def truth_from_meta(meta: Mapping[str, Any], vocabulary: Vocabulary) -> dict[str, str]:
    """group -> ground-truth label, for the groups whose `truth` path exists in `meta`."""
    labels = {}
    for name, group in vocabulary.groups.items():
        if not group.truth:
            continue
        value: Any = meta
        for key in group.truth.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            labels[name] = value
    return labels


def accuracy(predicted: Mapping[str, Mapping[str, str]], truth: Mapping[str, Mapping[str, str]],
             vocabulary: Vocabulary) -> dict[str, dict[str, float]]:
    """Per group, top-1 accuracy of `predicted` (id -> group -> value) against `truth`.

    Only ids and groups present in both count; `chance` (1 / number of values) is the accuracy
    of a random classifier, what the tiny profile's random CLIP should score.
    """
    result = {}
    for name, group in vocabulary.groups.items():
        pairs = [(predicted[i][name], labels[name]) for i, labels in truth.items()
                 if name in labels and name in predicted.get(i, {})]
        if pairs:
            correct = sum(guess == label for guess, label in pairs)
            result[name] = {"n": len(pairs), "accuracy": correct / len(pairs),
                            "chance": 1.0 / len(group.values)}
    return result
