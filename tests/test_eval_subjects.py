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
from tamer.synth import Identity, Scene, generate
from tamer.synth_world import class_prompt
from tasks.eval_subjects import held_out_subjects, load_subjects
from tasks.runs import pin_versions


def test_synth_folder_uses_the_held_out_split_and_unseen_scenes(tmp_path):
    generate(tmp_path / "synth", n_objects=4, views=2, size=32, seed=0, held_out_fraction=0.5)
    subject_set = load_subjects(str(tmp_path / "synth"), ShardStore(str(tmp_path / "root")), None, None, 3)
    truths = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "synth").glob("*/00.json")}
    assert {s.name for s in subject_set.subjects} == {n for n, t in truths.items() if t["split"] == "held_out"}
    for subject in subject_set.subjects:
        assert len(subject.images) == 2 and len(subject.prompts) == 3
        assert subject.class_noun == truths[subject.name]["class_name"]
        assert all(p.startswith("a {}, ") for p in subject.prompts)  # the form the synth base was captioned in
        rendered = {json.loads(p.read_text())["scene_phrase"] for p in (tmp_path / "synth" / subject.name).glob("*.json")}
        assert not rendered & {p[len("a {}, "):] for p in subject.prompts}  # scenes never rendered
        for prompt, scene in zip(subject.prompts, subject.prompt_scenes):
            assert prompt.format(subject.class_noun) == class_prompt(Identity(**subject.identity), Scene(**scene))


def _row(subject: str, meta: dict, when: dt.datetime) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return {"image_id": f"{subject}-{when.timestamp()}", "subject": subject, "class_name": "mug",
            "source": subject, "source_kind": "folder", "width": 8, "height": 8, "format": "PNG",
            "mode": "RGB", "num_bytes": 1, "image": buffer.getvalue(), "meta": json.dumps(meta),
            "ingested_at": when}


def test_dataset_held_out_subjects_are_the_ones_training_never_saw(tmp_path):
    """Decided from the run's pinned versions: held out in its split, or not in its images."""
    store = ShardStore(str(tmp_path))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store.write("images", pa.Table.from_pylist(
        [_row("seen", {"split": "train"}, t0), _row("split", {"split": "held_out"}, t0)], schema=IMAGES))
    run = {"table_versions": pin_versions(store)}
    # ingested later, with an earlier timestamp: the version decides, not the clock
    store.write("images", pa.Table.from_pylist([_row("late", {"split": "train"}, t0)], schema=IMAGES))
    assert [s.name for s in held_out_subjects(store, run, None, 2).subjects] == ["late", "split"]
    assert [s.name for s in held_out_subjects(store, None, None, 2).subjects] == ["split"]
    assert [s.name for s in held_out_subjects(store, {"table_versions": {}}, None, 2).subjects] == ["split"]


def test_a_run_pinned_before_any_image_saw_no_subject(tmp_path):
    store = ShardStore(str(tmp_path))
    run = {"table_versions": pin_versions(store)}
    assert run["table_versions"]["images"] == -1
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store.write("images", pa.Table.from_pylist(
        [_row("a", {"split": "train"}, t0), _row("b", {"split": "train"}, t0)], schema=IMAGES))
    assert [s.name for s in held_out_subjects(store, run, None, 1).subjects] == ["a", "b"]
    with pytest.raises(ValueError, match="no held-out subjects"):
        held_out_subjects(store, None, None, 1)


def test_dataset_without_a_synth_split_still_has_held_out_subjects(tmp_path):
    """Plain folders (no meta split): the recorded split holds at least one of two out."""
    store = ShardStore(str(tmp_path))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store.write("images", pa.Table.from_pylist([_row("a", {}, t0), _row("b", {}, t0)], schema=IMAGES))
    subjects = held_out_subjects(store, None, None, 1).subjects
    held = {name for name, row in read_splits(store).items() if row["split"] == "held_out"}
    assert held and {s.name for s in subjects} == held
    assert subjects[0].class_noun == "mug" and len(subjects[0].images) == 1
