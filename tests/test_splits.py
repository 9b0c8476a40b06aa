"""Held-out identities never reach training, and evaluation finds them."""

from __future__ import annotations

import json

import pyarrow as pa

from storage.shards import ShardStore
from storage.splits import is_held_out
from tasks.train_data import build_plan
from test_storage import image_rows


def test_is_held_out_reads_side_metadata():
    assert is_held_out(json.dumps({"split": "held_out"}))
    assert not is_held_out(json.dumps({"split": "train"}))
    assert not is_held_out(None) and not is_held_out("not json") and not is_held_out("[1]")


def test_training_plan_excludes_held_out_subjects(tmp_path):
    store = ShardStore(str(tmp_path))
    rows = image_rows(9).to_pylist()  # subjects s0, s1, s2: three images each
    for row in rows:
        row["meta"] = json.dumps({"split": "held_out" if row["subject"] == "s2" else "train"})
    store.write("images", pa.Table.from_pylist(rows))
    plan = build_plan(store)
    held_out = {row["image_id"] for row in rows if row["subject"] == "s2"}
    used = set(plan.general["target_id"].to_pylist()) | set(plan.domain["target_id"].to_pylist())
    used |= set(plan.domain["reference_id"].to_pylist())
    assert used and not used & held_out
    assert len(plan.general) == 6
