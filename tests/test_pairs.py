"""Pure pair/group logic: pair invariants, the grouping metric on hand-made labels, clustering."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.pairs import grouping_quality, near_duplicate_pairs, propose_groups, sample_pairs


def unit(rows: list[list[float]]) -> np.ndarray:
    vectors = np.asarray(rows, np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


GROUPS = {"dog": [f"d{i}" for i in range(6)], "cat": ["c0", "c1"], "mug": ["m0"],
          "car": [f"r{i}" for i in range(3)]}


@pytest.mark.parametrize("cap", [1, 4, 30])
def test_pairs_cover_every_subject_within_cap_and_never_self(cap):
    pairs = sample_pairs(GROUPS, cap=cap, seed=0)
    assert all(reference != target for _, reference, target in pairs)
    assert all(r in GROUPS[s] and t in GROUPS[s] for s, r, t in pairs)
    per_subject = {s: sum(p[0] == s for p in pairs) for s in GROUPS}
    assert per_subject["mug"] == 0  # one image: no pair possible
    for subject in ("dog", "cat", "car"):
        n = len(GROUPS[subject])
        assert per_subject[subject] == min(cap, n * (n - 1))
    assert len(set(pairs)) == len(pairs)


def test_pairs_are_deterministic_by_seed_and_independent_of_other_subjects():
    assert sample_pairs(GROUPS, 5, seed=1) == sample_pairs(dict(reversed(GROUPS.items())), 5, 1)
    assert sample_pairs(GROUPS, 5, seed=1) != sample_pairs(GROUPS, 5, seed=2)
    alone = sample_pairs({"dog": GROUPS["dog"]}, 5, seed=1)
    assert [p for p in sample_pairs(GROUPS, 5, seed=1) if p[0] == "dog"] == alone


def test_grouping_quality_on_hand_made_labels():
    truth = ["a", "a", "a", "b", "b", "c"]
    perfect = grouping_quality([0, 0, 0, 1, 1, -1], truth)
    assert perfect["purity"] == 1.0 and perfect["recall"] == 1.0 and perfect["groups"] == 2
    merged = grouping_quality([0] * 6, truth)  # one big group: every true pair found
    assert merged["purity"] == pytest.approx(3 / 6) and merged["recall"] == 1.0
    nothing = grouping_quality([None] * 6, truth)
    assert nothing == {"purity": 0.0, "recall": 0.0, "groups": 0, "identities": 3,
                       "grouped_fraction": 0.0}
    # groups {a,a,b} and {a,b}: majority 2 + 1 of 5 grouped; true pairs 3 (a) + 1 (b) = 4,
    # found same-identity pairs inside groups: (a,a) = 1 -> recall 1/4
    mixed = grouping_quality([0, 0, 1, 0, 1, None], truth)
    assert mixed["purity"] == pytest.approx(3 / 5) and mixed["recall"] == pytest.approx(1 / 4)
    assert mixed["grouped_fraction"] == pytest.approx(5 / 6)


def test_mutual_knn_groups_respect_threshold_and_min_size():
    rng = np.random.default_rng(0)
    centers = unit([[1, 0, 0, 0], [0, 1, 0, 0]])
    points = [centers[i] + 0.02 * rng.standard_normal(4) for i in (0, 0, 0, 1, 1)]
    vectors = unit([*points, [0, 0, 1, 0]])  # the last one is alone
    labels = propose_groups(vectors, threshold=0.9, neighbors=3, min_size=2)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]
    assert labels[5] == -1 and labels[:5].min() >= 0
    assert (propose_groups(vectors, 0.9, 3, min_size=3) == [0, 0, 0, -1, -1, -1]).all()
    assert (propose_groups(vectors, threshold=0.99999, neighbors=3, min_size=2) == -1).all()
    assert len(propose_groups(vectors[:0], 0.9, 3, 2)) == 0


def test_near_duplicate_pairs_above_threshold_only():
    vectors = unit([[1, 0, 0], [0.999, 0.04, 0], [0, 1, 0], [0, 0.6, 0.8]])
    pairs = near_duplicate_pairs(vectors, threshold=0.95)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)
    assert near_duplicate_pairs(vectors[:1], 0.5) == []


def test_augmentation_joins_views_that_are_each_others_neighbours_and_keeps_objects_apart():
    """Three views of one object at cosine ~0.83 to each other fall under a 0.9 threshold as they
    are; averaged over their 3 nearest they meet at their centre. Another object stays apart."""
    from tasks.pairs import augmented

    spread = 0.7  # each view leans off the object's direction along its own axis
    views = unit([[1, spread, 0, 0, 0, 0], [1, 0, spread, 0, 0, 0], [1, 0, 0, spread, 0, 0]])
    other = unit([[0, 0, 0, 0, 1, 0.1], [0, 0, 0, 0, 1, -0.1]])
    vectors = np.concatenate([views, other])
    assert (views @ views.T)[0, 1] < 0.9
    assert (propose_groups(vectors, 0.9, neighbors=3, min_size=2)[:3] == -1).all()
    labels = propose_groups(vectors, 0.9, neighbors=3, min_size=2, augment=3)
    assert labels[0] == labels[1] == labels[2] != -1 and labels[3] == labels[4] != labels[0]
    assert np.allclose(np.linalg.norm(augmented(vectors, 3), axis=1), 1.0)
    assert augmented(vectors, 1) is vectors  # 1: the vectors as they are
