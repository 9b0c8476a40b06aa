"""Joint batch policy determinism and ratio; the collate schema; the config's strictness."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from model.batching import JointBatchPolicy, collate, cross_reference, cross_reference_pairs
from model.tamer_model import TamerModelConfig


def test_policy_is_deterministic_per_seed_and_step():
    policy = JointBatchPolicy(batch_size=8, domain_ratio=0.8, seed=3)
    assert torch.equal(policy.domain_rows(5), JointBatchPolicy(8, 0.8, seed=3).domain_rows(5))
    assert policy.indices(5, 10, 20) == JointBatchPolicy(8, 0.8, seed=3).indices(5, 10, 20)
    other_seed = [JointBatchPolicy(8, 0.8, seed=4).domain_rows(s) for s in range(20)]
    assert any(not torch.equal(policy.domain_rows(s), o) for s, o in enumerate(other_seed))


def test_policy_ratio_holds_on_average_and_at_the_extremes():
    policy = JointBatchPolicy(batch_size=8, domain_ratio=0.8, seed=0)
    counts = [int(policy.domain_rows(s).sum()) for s in range(500)]
    assert set(counts) == {6, 7} and abs(np.mean(counts) - 6.4) < 0.1
    assert JointBatchPolicy(8, 1.0).domain_rows(0).all() and not JointBatchPolicy(8, 0.0).domain_rows(0).any()
    plan = policy.indices(0, num_domain=3, num_general=5)
    assert [kind == "domain" for kind, _ in plan] == policy.domain_rows(0).tolist()
    assert all(i < (3 if kind == "domain" else 5) for kind, i in plan)
    with pytest.raises(ValueError):
        JointBatchPolicy(8, 0.5).indices(0, num_domain=0, num_general=5)


def test_cross_reference_never_picks_the_target():
    rng = np.random.default_rng(0)
    picks = [cross_reference(4, 2, rng) for _ in range(200)]
    assert 2 not in picks and set(picks) == {0, 1, 3}
    assert cross_reference(1, 0, rng) == 0


def test_cross_reference_pairs_are_distinct_images_of_one_object():
    every = cross_reference_pairs(["c", "a", "b", "a"])
    assert every == [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b")]
    assert cross_reference_pairs(["only"]) == []
    capped = cross_reference_pairs("abcd", cap=5, rng=np.random.default_rng(1))
    assert len(set(capped)) == 5 and set(capped) < set(cross_reference_pairs("abcd"))
    assert capped == cross_reference_pairs("abcd", cap=5, rng=np.random.default_rng(1))
    assert cross_reference_pairs("ab", cap=9, rng=None) == [("a", "b"), ("b", "a")]
    with pytest.raises(ValueError):
        cross_reference_pairs("abcd", cap=2)


def test_collate_schema():
    ids = torch.arange(77)
    domain = {"pixel_values": torch.zeros(3, 32, 32), "input_ids": ids,
              "reference_pixel_values": torch.ones(3, 24, 24), "reference_mask": torch.ones(1, 24, 24)}
    general = {"pixel_values": torch.zeros(3, 32, 32), "input_ids": ids, "reference_pixel_values": None}
    batch = collate([domain, general])
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["input_ids"].shape == (2, 77)
    assert batch["reference_pixel_values"].shape == (2, 3, 24, 24) and (batch["reference_pixel_values"][1] == 0).all()
    assert batch["reference_mask"].shape == (2, 1, 24, 24)
    assert batch["has_mask"].tolist() == [True, False] and batch["has_object"].tolist() == [True, False]
    text_only = collate([general, general])
    assert text_only["reference_pixel_values"] is None and text_only["reference_mask"] is None


def test_config_rejects_unknown_and_invalid_fields():
    with pytest.raises(pydantic.ValidationError):
        TamerModelConfig(num_object_token=4)
    with pytest.raises(pydantic.ValidationError):
        TamerModelConfig(trainable="lora")
    assert TamerModelConfig().trainable == "full"
