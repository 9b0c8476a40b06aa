"""Metric code against hand-computed cosines, and the preprocessing recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from model.metrics import (Scorer, cosine_matrix, identical_pairs, mean_pair_cosine,
                           resize_center_crop, to_pixels)


def test_cosine_matrix_matches_hand_computation():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 0.0], [-1.0, -1.0]])
    expected = torch.tensor([[0.0, 1.0, -1 / math.sqrt(2)],
                             [1 / math.sqrt(2), 1 / math.sqrt(2), -1.0]])
    assert torch.allclose(cosine_matrix(a, b), expected, atol=1e-6)


def test_mean_pair_cosine_averages_over_real_images_and_skips_pairs():
    generated = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    real = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    h = 1 / math.sqrt(2)
    assert torch.allclose(mean_pair_cosine(generated, real), torch.tensor([(1 + h) / 2, (0 + h) / 2]))
    skip = torch.tensor([[True, False], [True, True]])
    out = mean_pair_cosine(generated, real, skip)
    assert out[0].item() == pytest.approx(h) and math.isnan(out[1].item())  # nothing left to average


def test_identical_pairs_finds_exact_copies_only():
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    assert identical_pairs([red, blue], [blue, red.copy()]).tolist() == [[False, True], [True, False]]


def test_resize_center_crop_takes_the_centre_of_the_shorter_side():
    image = np.zeros((40, 80, 3), np.uint8)  # 80 wide, 40 high
    image[:, 20:60] = 255  # the central 40 x 40 square is white
    out = resize_center_crop(Image.fromarray(image), resize=20, crop=20)
    assert out.size == (20, 20) and np.asarray(out).min() > 200
    pixels = to_pixels([out], 20, 20, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert pixels.shape == (1, 3, 20, 20) and pixels.max() <= 1.0 + 1e-6


def test_scorer_on_the_tiny_profile_is_in_range_and_recognises_itself():
    scorer = Scorer.from_profile("tiny")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]
    reference = scorer.reference(images)
    scores = scorer.score(images[:1] + [Image.new("RGB", (32, 32), "green")], "a photo of a dog", reference)
    for row in scores:
        assert all(-1.0 <= row[key] <= 1.0 for key in ("clip_i", "clip_t", "dino"))
    # the copy of images[0] is compared with the two *other* real images only
    expected = cosine_matrix(reference.dino[:1], reference.dino[1:]).mean().item()
    assert scores[0]["dino"] == pytest.approx(expected, abs=1e-5)
    assert scorer.score(images[:1], None, reference)[0]["clip_t"] is None


def test_oracle_reader_scores_identity_and_prompt_attributes_it_reads():
    """An oracle whose heads always answer shape=star, primary=red, background=sky: identity
    and prompt accuracy are the shares of known truths it matches; unknown sides are None."""
    from model.metrics import OracleReader
    from model.oracle import AttributeOracle

    oracle = AttributeOracle.for_vocabulary({"shape": ["circle", "star"], "primary": ["red", "blue"],
                                             "background": ["sky", "grass"]}, width=4)
    answers = {"shape": 1, "primary": 0, "background": 0}
    with torch.no_grad():
        for key, head in oracle.heads.items():
            head.weight.zero_()
            head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(answers[key]), 2).float() * 10)
    reader = OracleReader(oracle, side=32)
    image = Image.new("RGB", (64, 64), (10, 200, 30))
    identity = {"shape": "star", "primary": "blue", "texture": "solid"}  # texture: not read, not counted
    assert reader.read(image, identity, {"background": "sky"}) == {"identity_acc": 0.5, "prompt_acc": 1.0}
    assert reader.read(image, {"shape": "circle"}, None) == {"identity_acc": 0.0, "prompt_acc": None}
