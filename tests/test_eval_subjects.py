"""Subject sources other than DreamBench: a synth folder and the dataset's held-out subjects."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pytest
from PIL import Image

from storage.schemas import IMAGES
from storage.shards import ShardStore
from storage.splits import read_splits
from tamer.synth import generate
from tasks.eval_subjects import held_out_subjects, load_subjects


def test_synth_folder_uses_the_held_out_split_and_unseen_scenes(tmp_path):
    generate(tmp_path / "synth", n_objects=4, views=2, size=32, seed=0, held_out_fraction=0.5)
    subject_set = load_subjects(str(tmp_path / "synth"), ShardStore(str(tmp_path / "root")), None, None, 3)
    truths = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "synth").glob("*/00.json")}
    assert {s.name for s in subject_set.subjects} == {n for n, t in truths.items() if t["split"] == "held_out"}
    for subject in subject_set.subjects:
        assert len(subject.images) == 2 and len(subject.prompts) == 3
        assert subject.class_noun == truths[subject.name]["class_name"]
        assert all(p.startswith("a {} ") for p in subject.prompts)
        rendered = {json.loads(p.read_text())["scene_phrase"] for p in (tmp_path / "synth" / subject.name).glob("*.json")}
        assert not rendered & {p[len("a {} "):] for p in subject.prompts}  # scenes never rendered


def _row(subject: str, meta: dict, when: dt.datetime) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return {"image_id": f"{subject}-{when.timestamp()}", "subject": subject, "class_name": "mug",
            "source": subject, "source_kind": "folder", "width": 8, "height": 8, "format": "PNG",
            "mode": "RGB", "num_bytes": 1, "image": buffer.getvalue(), "meta": json.dumps(meta),
            "ingested_at": when}


def test_dataset_held_out_subjects_are_the_ones_training_never_saw(tmp_path):
    store = ShardStore(str(tmp_path))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [_row("seen", {"split": "train"}, t0), _row("split", {"split": "held_out"}, t0),
            _row("late", {"split": "train"}, t0 + dt.timedelta(days=2))]
    store.write("images", pa.Table.from_pylist(rows, schema=IMAGES))
    run = {"started_at": t0 + dt.timedelta(days=1), "ended_at": None}
    assert [s.name for s in held_out_subjects(store, run, None, 2).subjects] == ["late", "split"]
    assert [s.name for s in held_out_subjects(store, None, None, 2).subjects] == ["split"]


def test_a_split_recorded_after_the_run_ended_is_not_unseen_by_it(tmp_path):
    """A run that ended before the split existed (older data) may have trained on the subject."""
    store = ShardStore(str(tmp_path))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store.write("images", pa.Table.from_pylist(
        [_row("a", {}, t0), _row("b", {"split": "held_out"}, t0)], schema=IMAGES))
    legacy = {"started_at": t0, "ended_at": t0 + dt.timedelta(hours=1)}
    with pytest.raises(ValueError, match="no held-out subjects"):
        held_out_subjects(store, legacy, None, 1)
    current = {"started_at": t0, "ended_at": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}
    assert [s.name for s in held_out_subjects(store, current, None, 1).subjects] == ["b"]


def test_dataset_without_a_synth_split_still_has_held_out_subjects(tmp_path):
    """Plain folders (no meta split): the recorded split holds at least one of two out."""
    store = ShardStore(str(tmp_path))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store.write("images", pa.Table.from_pylist([_row("a", {}, t0), _row("b", {}, t0)], schema=IMAGES))
    subjects = held_out_subjects(store, None, None, 1).subjects
    held = {name for name, row in read_splits(store).items() if row["split"] == "held_out"}
    assert held and {s.name for s in subjects} == held
    assert subjects[0].class_noun == "mug" and len(subjects[0].images) == 1
