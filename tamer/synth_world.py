"""The labelled world the `synth` profile is trained and judged on: renders of `tamer.synth`
objects as tensors, their captions, and the evaluation prompts (used by the profile's trainers
and by the synth-quality benchmark).

Identity = shape x palette x texture x eyes; scene = background, position, scale, rotation,
lighting (what a prompt controls). At 32 px a "small" object is about 10 px across and its
identity is unreadable even to a classifier trained on it (oracle: shape 0.90, primary colour
0.79, eyes 0.83 at small scale vs >= 0.94 at medium and large), so this world's scenes use
the medium and large scales only (`BENCH_SCALES`). Captions are `tamer.synth.describe` + `scene_phrase` (the
captioning flow's attribute composition reduces to exactly these words for synth objects, with
no VLM caption to merge, so the benchmark uses the synth functions directly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from tamer.synth import (BACKGROUNDS, COLORS, EYES, LIGHTINGS, POSITIONS, ROTATIONS, SCALES, SCENE_PHRASES, SHAPES,
                         TEXTURES, Identity, Scene, Subject, describe, identities, render,
                         sample_scene, scene_phrase)

IDENTITY_KEYS = ("shape", "primary", "secondary", "texture", "eyes")
SCENE_KEYS = ("background", "position", "scale", "rotation", "lighting")
VOCAB: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "primary": tuple(COLORS), "secondary": tuple(COLORS), "texture": TEXTURES,
    "eyes": EYES, "background": BACKGROUNDS, "position": tuple(POSITIONS), "scale": tuple(SCALES),
    "rotation": tuple(ROTATIONS), "lighting": LIGHTINGS,
}
KEYS = IDENTITY_KEYS + SCENE_KEYS
BENCH_SCALES = ("medium", "large")
# The studio: one value of every scene attribute but the background. A base trained in it
# learns shape (recipe v5; `benchmarks/base_probe.py --scenes fixed`): with all five scene
# attributes varied, 6,000 steps left shape at chance.
STUDIO = {"background": "gray", "position": "center", "scale": "large", "rotation": "upright",
          "lighting": "bright"}
OBJECT_WORD = "<obj>"  # the placeholder the training recipe's object captions use (model.compose)
# What the attribute vocabulary (configs/attributes.yaml) calls the textures whose word alone is
# not what a reader says: alt text names a texture either way ("dotted", "polka-dotted").
TEXTURE_PHRASES = {"solid": "solid-colored", "dotted": "polka-dotted", "gradient": "gradient-colored"}
# Words the attribute vocabulary offers for real objects that no synth object is (its other
# shapes and categories, colours, textures). A zero-shot reading chooses among them too, and a
# CLIP trained on synth captions knows "black" and "gray" only as backgrounds: of the v11 CLIP's
# zero-shot errors on fresh renders, about half named one of these words.
UNRENDERED_WORDS: dict[str, tuple[str, ...]] = {
    "shape": ("round", "rectangular", "cylindrical", "irregular", "backpack", "stuffed animal", "bowl", "can",
              "candle", "cat", "clock", "sneaker", "dog", "toy", "boot", "glasses", "teapot", "vase", "cartoon"),
    "primary": ("black", "gray", "brown", "silver", "gold"),
    "texture": ("shiny", "furry"),
}


def labels(identity: Identity, scene: Scene) -> list[int]:
    """Vocabulary index of every attribute, in KEYS order."""
    values = {**identity.attributes(), **scene.attributes()}
    return [VOCAB[key].index(values[key]) for key in KEYS]


def caption(identity: Identity, scene: Scene) -> str:
    """Full caption: "a red and white striped star with one eye, against a blue sky, ..."."""
    return f"{describe(identity)}, {scene_phrase(scene.attributes())}"


def class_prompt(identity: Identity, scene: Scene, noun: str | None = None) -> str:
    """Prompt naming only the class noun (DreamBench's rule): "a star, against a blue sky, ..."."""
    return f"a {noun or identity.shape}, {scene_phrase(scene.attributes())}"


def object_prompt(identity: Identity, scene: Scene) -> str:
    """The recipe's object caption: "a <obj> star, ..."; identity comes from the object tokens."""
    return class_prompt(identity, scene, f"{OBJECT_WORD} {identity.shape}")


def caption_variants(identity: Identity, scene: Scene, count: int, rng: np.random.Generator,
                     phrase_rate: float = 0.0) -> list[str]:
    """The full caption and `count - 1` partial ones, as alt text varies: a random subset of the
    identity's words (colours, texture, shape or just "object", eyes) and of the scene phrases,
    sometimes prefixed "a photo of". A contrastive model trained on one fixed template learns
    to match that template (mostly its scene half) and reads short prompts ("a red thing") as
    noise; partial captions make each attribute word carry the match on its own. A named
    texture is its `TEXTURE_PHRASES` phrase at `phrase_rate` (0 draws nothing more from `rng`)."""
    i, phrases = identity, [SCENE_PHRASES[key][value] for key, value in scene.attributes().items()]
    variants = [caption(identity, scene)]
    while len(variants) < count:
        keep = rng.random(6) < 0.5
        colours = (f"{i.primary} and {i.secondary}" if keep[1] else i.primary) if keep[0] else ""
        texture = i.texture if keep[2] else ""
        if texture and phrase_rate and rng.random() < phrase_rate:
            texture = TEXTURE_PHRASES.get(texture, texture)
        words = [colours, texture, i.shape if keep[3] else rng.choice(["object", "thing"])]
        text = "a " + " ".join(w for w in words if w)
        if keep[4]:
            text += f" with {i.eyes}"
        scene_words = [p for p in phrases if rng.random() < 0.3]
        text = ", ".join([text, *scene_words])
        variants.append(f"a photo of {text}" if keep[5] else text)
    return variants


def attribute_prompts(key: str, unrendered: bool = False) -> list[str]:
    """One short caption per value of an identity attribute, in the forms `caption_variants`
    draws ("a star", "a red thing", "a dotted thing", "a thing with two eyes"), in `VOCAB`
    order: the classes a zero-shot reading of that attribute chooses among; with `unrendered`,
    then the key's `UNRENDERED_WORDS` in the same form, classes no render is."""
    form = {"shape": "a {}", "eyes": "a thing with {}"}.get(key, "a {} thing")
    return [form.format(value) for value in VOCAB[key] + (UNRENDERED_WORDS.get(key, ()) if unrendered else ())]


@dataclass
class Renders:
    """N labelled views: pixels in [-1, 1], masks in {0, 1}, and who/where each one is."""

    pixels: torch.Tensor  # (N, 3, S, S) float
    masks: torch.Tensor  # (N, 1, S, S) float
    labels: torch.Tensor  # (N, len(KEYS)) long
    subject: torch.Tensor  # (N,) long: index into `subjects`
    subjects: list[Subject]
    scenes: list[Scene]

    def __len__(self) -> int:
        return len(self.pixels)

    def identity(self, row: int) -> Identity:
        return self.subjects[int(self.subject[row])].identity


def to_tensor(image) -> torch.Tensor:
    """PIL RGB -> (3, S, S) float in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def mask_tensor(mask) -> torch.Tensor:
    """PIL L mask -> (1, S, S) float in [0, 1]."""
    return torch.from_numpy(np.asarray(mask, dtype=np.float32)[None] / 255.0)


def bench_scene(rng: np.random.Generator, held: Mapping[str, str] | None = None) -> Scene:
    """`tamer.synth.sample_scene` with the scale drawn from `BENCH_SCALES`, then the attributes
    in `held` set to their values (drawn first, so the jitter and the other attributes are the
    same draws with or without `held`)."""
    scene = sample_scene(rng)
    scene = replace(scene, scale=BENCH_SCALES[int(rng.integers(len(BENCH_SCALES)))])
    return replace(scene, **held) if held else scene


def render_views(subjects: Sequence[Subject], views: int, size: int, seed: int,
                 held: Mapping[str, str] | None = None) -> Renders:
    """`views` fresh random scenes per subject (`held` as in `bench_scene`); a pure function
    of the arguments."""
    rng = np.random.default_rng([seed, 0x5E])
    pixels, masks, rows, owner, scenes = [], [], [], [], []
    for k, subject in enumerate(subjects):
        for _ in range(views):
            scene = bench_scene(rng, held)
            image, mask = render(subject.identity, scene, size)
            pixels.append(to_tensor(image))
            masks.append(mask_tensor(mask))
            rows.append(labels(subject.identity, scene))
            owner.append(k)
            scenes.append(scene)
    return Renders(torch.stack(pixels), torch.stack(masks), torch.tensor(rows), torch.tensor(owner),
                   list(subjects), scenes)


def random_subjects(n: int, seed: int) -> list[Subject]:
    """n identities drawn independently of any split (for the oracle and CLIP, which see the
    whole attribute space, as an attribute classifier trained on renders would)."""
    return identities(n, seed)


def split_subjects(n_train: int, n_held_out: int, seed: int) -> tuple[list[Subject], list[Subject]]:
    """Training identities and held-out identities that no diffusion model sees before evaluation."""
    total = n_train + n_held_out
    subjects = identities(total * 2, seed, held_out_fraction=n_held_out / total)
    train = [s for s in subjects if s.split == "train"][:n_train]
    held_out = [s for s in subjects if s.split == "held_out"][:n_held_out]
    return train, held_out


def eval_scenes(n: int, seed: int, held: Mapping[str, str] | None = None) -> list[Scene]:
    """The prompts' scenes, shared by every method and held-out object."""
    rng = np.random.default_rng([seed, 0xE7A1])
    return [bench_scene(rng, held) for _ in range(n)]
