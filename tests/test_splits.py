"""Every dataset's held-out split: recorded once, stable as data grows, never trained on, and
not leaked through copies, near-duplicates or identity groups."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from storage.shards import ShardStore
from storage.splits import (BUCKETS, HELD_OUT, HELD_OUT_FRACTION, TRAIN, assign, explicit_split,
                            read_splits, record_splits, subject_hash)
from tasks.train_data import build_plan
from test_storage import image_rows


def _names(held: bool, count: int) -> list[str]:
    """Subject names the hash rule holds out (or keeps), at the default fraction."""
    pick = (n for n in (f"subject-{i}" for i in range(1000))
            if (subject_hash(n) % BUCKETS < HELD_OUT_FRACTION * BUCKETS) == held)
    return [next(pick) for _ in range(count)]


def _images(subjects: list[str | None], per_subject: int = 3, meta: dict | None = None,
            start: int = 0) -> pa.Table:
    rows = image_rows(len(subjects) * per_subject, start=start).to_pylist()
    for i, row in enumerate(rows):
        row["subject"] = subjects[i // per_subject]
        row["source"] = f"/src/{row['subject']}/{i + start}.png"
        row["meta"] = json.dumps(meta) if meta else None
    return pa.Table.from_pylist(rows)


def _trained(store: ShardStore) -> set[str]:
    plan = build_plan(store)
    return (set(plan.general["target_id"].to_pylist()) | set(plan.domain["target_id"].to_pylist())
            | set(plan.domain["reference_id"].to_pylist()))


def test_explicit_split_reads_side_metadata_and_ignores_bad_input():
    assert explicit_split(json.dumps({"split": "held_out"})) == HELD_OUT
    assert explicit_split(json.dumps({"split": "train"})) == TRAIN
    for bad in (None, "", "not json", "[1]", json.dumps({"split": "test"}), json.dumps({"split": 3})):
        assert explicit_split(bad) is None


def test_hash_rule_holds_out_the_fraction_and_never_depends_on_other_subjects():
    names = [f"s{i}" for i in range(2000)]
    alone = {name: assign({name: None}, {}, 0.25)[name][0] for name in names}
    together = assign(dict.fromkeys(names), {}, 0.25)
    assert {name: split for name, (split, _) in together.items()} == alone
    assert 400 < sum(split == HELD_OUT for split in alone.values()) < 600
    none_hashed = assign(dict.fromkeys(names), {}, 0.0)  # only the fallback holds one out
    assert [split for split, _ in none_hashed.values()].count(HELD_OUT) == 1


def test_tiny_datasets_hold_one_out_from_two_subjects_without_changing_recorded_ones():
    first, second, third = _names(held=False, count=3)
    assert assign({first: None}, {}, 0.25) == {first: (TRAIN, "hash")}  # one subject: nothing to hold out
    # two new, none held out by the hash: the smaller hash is held out
    pair = assign({first: None, second: None}, {}, 0.25)
    smaller = min((first, second), key=subject_hash)
    assert pair[smaller] == (HELD_OUT, "fallback") and [s for s, _ in pair.values()].count(HELD_OUT) == 1
    # first already recorded (perhaps trained on): only the newcomer is eligible
    assert assign({second: None}, {first: TRAIN}, 0.25) == {second: (HELD_OUT, "fallback")}
    # a held-out subject exists already: no fallback
    assert assign({third: None}, {first: TRAIN, second: HELD_OUT}, 0.25) == {third: (TRAIN, "hash")}
    # explicit splits win and are never overridden, even when they hold nothing out
    assert assign({first: TRAIN, second: TRAIN}, {}, 0.25) == {first: (TRAIN, "meta"), second: (TRAIN, "meta")}


def test_record_splits_writes_each_subject_once_and_keeps_it_as_data_grows(tmp_path):
    store = ShardStore(str(tmp_path))
    kept, held = _names(held=False, count=2), _names(held=True, count=1)
    store.write("images", _images([kept[0]]))
    assert {k: r["split"] for k, r in record_splits(store).items()} == {kept[0]: TRAIN}
    store.write("images", _images([kept[1]], start=10))  # two subjects, none hashed out
    assert record_splits(store)[kept[1]]["rule"] == "fallback"
    store.write("images", _images([held[0], None], start=20))  # + an unlabeled image
    before = store.row_count("splits")
    splits = record_splits(store)
    assert {k: r["split"] for k, r in splits.items() if k in kept + held} == {
        kept[0]: TRAIN, kept[1]: HELD_OUT, held[0]: HELD_OUT}
    unlabeled = [k for k in splits if k not in kept + held]
    assert len(unlabeled) == 3 and all(k.startswith("id") for k in unlabeled)  # keyed by image id
    assert store.row_count("splits") == before + 4
    assert record_splits(store) == splits and store.row_count("splits") == before + 4  # no-op


def test_first_recorded_row_wins_and_bad_fraction_fails(tmp_path):
    store = ShardStore(str(tmp_path))
    now = dt.datetime.now(dt.UTC)
    for split in (HELD_OUT, TRAIN):  # e.g. two writers racing
        store.write("splits", pa.Table.from_pylist([{"subject": "a", "split": split, "rule": "hash",
                                                     "fraction": 0.25, "created_at": now}]))
    assert read_splits(store)["a"]["split"] == HELD_OUT
    with pytest.raises(ValueError, match="fraction"):
        record_splits(store, 1.0)


def test_synth_meta_split_is_kept(tmp_path):
    store = ShardStore(str(tmp_path))
    held = _names(held=True, count=1)[0]
    kept = _names(held=False, count=1)[0]
    store.write("images", _images([held], meta={"split": "train"}))
    store.write("images", _images([kept], meta={"split": "held_out"}, start=10))
    used = _trained(store)
    splits = read_splits(store)
    assert (splits[held]["split"], splits[held]["rule"]) == (TRAIN, "meta")
    assert (splits[kept]["split"], splits[kept]["rule"]) == (HELD_OUT, "meta")
    assert used == {f"id{i:05d}" for i in range(3)}


def test_training_excludes_held_out_subjects_and_every_way_they_leak(tmp_path):
    store = ShardStore(str(tmp_path))
    held, = _names(held=True, count=1)
    train_a, train_b = _names(held=False, count=2)
    images = _images([held, train_a, train_b, None, None], per_subject=3)
    store.write("images", images)
    ids = {row["subject"] or row["image_id"]: [] for row in images.to_pylist()}
    for row in images.to_pylist():
        ids[row["subject"] or row["image_id"]].append(row["image_id"])
    held_ids = set(ids[held])
    near_copy, exact_copy = ids[train_a][0], ids[train_b][0]
    now = dt.datetime.now(dt.UTC)
    # a re-encoded copy of a held-out image filed under train_a (its closest match); a train_b
    # image close to a held-out one too, but closer to its own sibling, is no copy
    store.write("near_duplicates", pa.Table.from_pylist([
        {"image_id": a, "other_id": b, "cosine": cosine, "threshold": 0.97, "config_hash": "c",
         "found_at": now}
        for a, b, cosine in ((near_copy, sorted(held_ids)[0], 0.999), (near_copy, ids[train_a][1], 0.98),
                             (ids[train_b][1], sorted(held_ids)[1], 0.975),
                             (ids[train_b][1], ids[train_b][2], 0.99))]))
    # a byte-identical copy: kept under train_b (listed first), the held-out original skipped
    store.write("duplicates", pa.Table.from_pylist([
        {"image_id": exact_copy, "source": f"/src/{held}/99.png",
         "kept_source": f"/src/{train_b}/2.png", "seen_at": now}]))
    # two unlabeled images grouped by kNN with the near-copy: the group is one identity
    unlabeled = sorted(i for k, v in ids.items() if k not in (held, train_a, train_b) for i in v)
    store.write("subject_groups", pa.Table.from_pylist(
        [{"image_id": i, "group_id": "knn-x", "origin": "knn", "snapshot": "s", "created_at": now}
         for i in unlabeled] + [{"image_id": near_copy, "group_id": train_a, "origin": "label",
                                 "snapshot": "s", "created_at": now}]))
    used = _trained(store)
    assert not used & held_ids
    assert near_copy not in used and exact_copy not in used
    assert not used & set(unlabeled)  # unlabeled images of a leaking group
    assert used == {*ids[train_a][1:], *ids[train_b][1:]}
    # without any leak records, only the held-out split and its own rows stay out
    clean = ShardStore(str(tmp_path / "clean"))
    clean.write("images", images)
    assert not _trained(clean) & held_ids and {near_copy, exact_copy} <= _trained(clean)
