"""Invariants of the synthetic generator: pure, growth-stable, idempotent, truthful labels."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tamer import synth
from tamer.synth import Identity, Scene, describe, generate, identities, render, scene_phrase

BASE_IDENTITY = Identity("star", "red", "white", "striped", "one eye")
BASE_SCENE = Scene("gray", "center", "large", "upright", "bright", variation=7)
SCENE_VOCABS = {"background": synth.BACKGROUNDS, "position": synth.POSITIONS,
                "scale": synth.SCALES, "rotation": synth.ROTATIONS, "lighting": synth.LIGHTINGS}
IDENTITY_VOCABS = {"shape": synth.SHAPES, "primary": synth.COLORS, "secondary": synth.COLORS,
                   "texture": synth.TEXTURES, "eyes": synth.EYES}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_arguments_give_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    generate(tmp_path / "a", n_objects=4, views=3, size=32, seed=1, held_out_fraction=0.5)
    generate(tmp_path / "b", n_objects=4, views=3, size=32, seed=1, held_out_fraction=0.5)
    generate(tmp_path / "c", n_objects=4, views=3, size=32, seed=2, held_out_fraction=0.5)
    a, b, c = (snapshot(tmp_path / name) for name in "abc")
    assert len(a) == 1 + 4 * 3 * 3
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".png") and not k.endswith(".mask.png"))


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    n = 70  # more than one chunk, so the process pool really runs
    generate(tmp_path / "serial", n_objects=n, views=1, size=16, seed=3)
    summary = generate(tmp_path / "parallel", n_objects=n, views=1, size=16, seed=3, workers=2)
    assert summary.written == n
    assert snapshot(tmp_path / "serial") == snapshot(tmp_path / "parallel")


def test_growth_keeps_first_objects_and_rerun_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    generate(out, n_objects=3, views=2, size=32, seed=5)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("obj*/*")}
    grown = generate(out, n_objects=5, views=2, size=32, seed=5)
    assert grown.written == 5 * 2 - 3 * 2
    assert sorted(p.name for p in out.glob("obj*")) == [f"obj{i:05d}" for i in range(5)]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before

    after = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert generate(out, n_objects=5, views=2, size=32, seed=5).written == 0
    assert generate(out, n_objects=2, views=2, size=32, seed=5).written == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == after

    generate(tmp_path / "fresh", n_objects=5, views=2, size=32, seed=5)
    assert snapshot(out) == snapshot(tmp_path / "fresh")
    record = json.loads((out / "synth.json").read_text())
    assert record["n_objects"] == 5 and record["images"] == 10
    assert record["format_version"] == synth.FORMAT_VERSION


def test_other_arguments_into_the_same_folder_are_refused(tmp_path: Path) -> None:
    generate(tmp_path, n_objects=1, views=1, size=16, seed=0)
    with pytest.raises(ValueError, match="other arguments"):
        generate(tmp_path, n_objects=1, views=1, size=16, seed=1)


def test_ground_truth_reproduces_the_written_pixels(tmp_path: Path) -> None:
    generate(tmp_path, n_objects=3, views=2, size=32, seed=9, held_out_fraction=0.34)
    truths = sorted(tmp_path.glob("obj*/*.json"))
    assert len(truths) == 6
    for path in truths:
        truth = json.loads(path.read_text())
        identity, scene = Identity(**truth["identity"]), Scene(**truth["scene"])
        image, mask = render(identity, scene, truth["size"])
        stem = path.with_suffix("")
        written_image = Image.open(stem.with_name(stem.name + ".png"))
        written_mask = Image.open(stem.with_name(stem.name + ".mask.png"))
        assert (written_image.mode, written_mask.mode) == ("RGB", "L")
        assert np.array_equal(pixels(written_image), pixels(image))
        assert np.array_equal(pixels(written_mask), pixels(mask))
        assert truth["subject"] == path.parent.name
        assert truth["class_name"] == identity.shape
        assert truth["split"] in synth.SPLITS
        assert truth["identity"] == identity.attributes()
        assert {k: truth["scene"][k] for k in scene.attributes()} == scene.attributes()
        assert truth["description"] == describe(identity)


@pytest.mark.parametrize("shape", synth.SHAPES)
def test_mask_covers_pixels_that_differ_from_the_background(shape: str) -> None:
    identity = dataclasses.replace(BASE_IDENTITY, shape=shape)
    left = dataclasses.replace(BASE_SCENE, position="left", scale="medium")
    right = dataclasses.replace(left, position="right")
    image, mask = render(identity, left, 48)
    background_there, other_mask = render(identity, right, 48)  # same background, object moved away
    only_left = (pixels(mask) == 255) & (pixels(other_mask) == 0)
    assert pixels(mask).max() == 255 and only_left.sum() > 20
    difference = np.abs(pixels(image) - pixels(background_there)).sum(axis=-1)
    assert np.median(difference[only_left]) > 30
    outside = (pixels(mask) == 0) & (pixels(other_mask) == 0)  # only background remains there
    assert outside.sum() > 0.3 * outside.size
    assert np.array_equal(pixels(image)[outside], pixels(background_there)[outside])


@pytest.mark.parametrize("attribute", list(SCENE_VOCABS))
def test_every_scene_value_changes_the_image_but_not_the_identity(attribute: str) -> None:
    images = []
    for value in SCENE_VOCABS[attribute]:
        scene = dataclasses.replace(BASE_SCENE, **{attribute: value})
        assert scene.attributes()[attribute] == value
        images.append(pixels(render(BASE_IDENTITY, scene, 32)[0]))
    for i in range(len(images)):
        for j in range(i):
            assert np.abs(images[i] - images[j]).sum() > 0, (attribute, i, j)
    assert BASE_IDENTITY.attributes() == dict(shape="star", primary="red", secondary="white",
                                              texture="striped", eyes="one eye")


@pytest.mark.parametrize("attribute", list(IDENTITY_VOCABS))
def test_every_identity_value_changes_the_object(attribute: str) -> None:
    seen = []
    for value in IDENTITY_VOCABS[attribute]:
        try:
            identity = dataclasses.replace(BASE_IDENTITY, **{attribute: value})
        except ValueError:  # primary == secondary is not an identity
            continue
        image, mask = render(identity, BASE_SCENE, 32)
        seen.append(pixels(image)[pixels(mask) == 255])
    assert len(seen) >= len(IDENTITY_VOCABS[attribute]) - 1
    for i in range(len(seen)):
        for j in range(i):
            assert seen[i].shape != seen[j].shape or np.abs(seen[i] - seen[j]).sum() > 0


def test_render_is_pure() -> None:
    a = render(BASE_IDENTITY, BASE_SCENE, 40)
    b = render(BASE_IDENTITY, BASE_SCENE, 40)
    assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(a, b))
    assert a[0].size == a[1].size == (40, 40)


def test_views_of_one_subject_share_identity_and_differ_in_scene(tmp_path: Path) -> None:
    generate(tmp_path, n_objects=2, views=4, size=32, seed=4)
    for folder in tmp_path.glob("obj*"):
        truths = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        assert len({json.dumps(t["identity"], sort_keys=True) for t in truths}) == 1
        assert len({json.dumps(t["scene"], sort_keys=True) for t in truths}) == 4
        images = {p.read_bytes() for p in folder.glob("*.png") if not p.name.endswith(".mask.png")}
        assert len(images) == 4


def test_held_out_split_is_disjoint_exact_and_stable() -> None:
    subjects = identities(400, seed=11, held_out_fraction=0.25)
    held = {s.identity for s in subjects if s.split == "held_out"}
    train = {s.identity for s in subjects if s.split == "train"}
    assert len(held) == 100 and not held & train
    assert identities(150, seed=11, held_out_fraction=0.25) == subjects[:150]
    assert identities(400, seed=12, held_out_fraction=0.25) != subjects
    assert all(s.split == "train" for s in identities(50, seed=11))
    # past the identity space, repeats keep their split, so the splits stay disjoint
    wrapped = identities(synth.IDENTITY_SPACE + 50, seed=11, held_out_fraction=0.25)
    for s in wrapped[synth.IDENTITY_SPACE:]:
        assert (s.identity, s.split) == (wrapped[s.index - synth.IDENTITY_SPACE].identity,
                                         wrapped[s.index - synth.IDENTITY_SPACE].split)


def test_identities_are_distinct_over_the_whole_space() -> None:
    subjects = identities(synth.IDENTITY_SPACE, seed=0)
    assert len({s.identity for s in subjects}) == synth.IDENTITY_SPACE
    assert len({s.subject_id for s in subjects}) == synth.IDENTITY_SPACE


def test_samplers_and_phrases_use_the_vocabularies_verbatim() -> None:
    rng = np.random.default_rng(0)
    scenes = [synth.sample_scene(rng) for _ in range(300)]
    for attribute, vocab in SCENE_VOCABS.items():
        assert {s.attributes()[attribute] for s in scenes} == set(vocab)
        assert set(synth.SCENE_PHRASES[attribute]) == set(vocab)
    identity = synth.sample_identity(rng)
    caption = describe(identity)
    assert all(value in caption for value in identity.attributes().values())
    assert describe(BASE_IDENTITY) == "a red and white striped star with one eye"
    phrase = scene_phrase(dataclasses.replace(BASE_SCENE, background="sky", position="left",
                                              scale="small", lighting="dim").attributes())
    assert phrase == "against a blue sky, on the left, small, upright, in dim light"
    with pytest.raises(ValueError):
        Identity("blob", "red", "white", "solid", "one eye")


def test_caption_variants_name_textures_by_the_attribute_vocabularys_phrase_at_its_rate() -> None:
    """CLIP's zero-shot classifiers read textures through configs/attributes.yaml's phrases; the
    captions it trains on say the phrase as often as the rate asks, and the world's word otherwise."""
    from model.attributes import load_vocabulary
    from tamer.synth_world import TEXTURE_PHRASES, caption_variants

    phrases = load_vocabulary(Path(__file__).parents[1] / "configs" / "attributes.yaml").groups["texture"].phrases()
    assert {word: phrases[word] for word in TEXTURE_PHRASES} == TEXTURE_PHRASES
    assert set(TEXTURE_PHRASES) == {word for word, phrase in phrases.items() if phrase != word and word in synth.TEXTURES}
    dotted = dataclasses.replace(BASE_IDENTITY, texture="dotted")

    def named(rate: float) -> tuple[int, int]:
        texts = caption_variants(dotted, BASE_SCENE, 400, np.random.default_rng(3), rate)[1:]
        phrase = sum("polka-dotted" in t for t in texts)
        return phrase, sum("dotted" in t for t in texts) - phrase

    never, always, half = named(0.0), named(1.0), named(0.5)
    assert never[0] == 0 and never[1] > 100
    assert always[1] == 0 and always[0] > 100
    assert 0.35 < half[0] / sum(half) < 0.65
    striped = caption_variants(BASE_IDENTITY, BASE_SCENE, 100, np.random.default_rng(3), 1.0)  # a word with no phrase
    assert sum("striped" in t for t in striped) > 30 and not any(p in t for t in striped for p in TEXTURE_PHRASES.values())


def test_unrendered_words_are_the_attribute_vocabularys_words_no_synth_object_is() -> None:
    from model.attributes import load_vocabulary
    from tamer.synth_world import UNRENDERED_WORDS, VOCAB

    groups = load_vocabulary(Path(__file__).parents[1] / "configs" / "attributes.yaml").groups
    offered = {"shape": [*groups["shape"].phrases(), *groups["category"].phrases()],
               "primary": list(groups["color"].phrases()), "texture": list(groups["texture"].phrases())}
    for key, words in offered.items():
        assert set(UNRENDERED_WORDS[key]) == set(words) - set(VOCAB[key]), key
        assert len(UNRENDERED_WORDS[key]) == len(set(UNRENDERED_WORDS[key]))
