"""The caption flow end to end on real Ray and Prefect with the tiny profile: synth and DreamBench,
one row per image, class nouns in captions, idempotent re-runs, re-captioning on a changed
config, quarantine of undecodable rows, preflight before any data work, stats sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from model.profiles import ModelLoadError
from storage.catalog import connect
from storage.shards import ShardStore
from tamer import stats
from tamer.config import CaptionSettings, IngestSettings
from tamer.stats import word_count
from storage.queries import latest_captions
from tasks.caption import attribute_accuracy, load_vocabulary, vocabulary_path
from tasks.ingest import ingest_source
from synth_data import UNDECODABLE_ID, add_undecodable_image, ingested_synth

VOCABULARY = load_vocabulary(vocabulary_path(CaptionSettings()))


def write_config(path: Path, **caption) -> str:
    # local_below 0: these tests mean the Ray Data path, however few images they use
    path.write_text(yaml.safe_dump({"caption": {"max_new_tokens": 8, "local_below": 0,
                                                **caption}}))
    return str(path)


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory) -> ShardStore:
    """6 synth objects x 3 views, ingested, plus one images row whose bytes do not decode."""
    store = ingested_synth(tmp_path_factory.mktemp("caption-synth"), 6, 3, size=64, seed=3)
    add_undecodable_image(store)
    return store


def test_synth_caption_rerun_and_changed_config(synth_store, tmp_path, ray_local, prefect_server):
    from flows.caption import caption_flow

    root, store = synth_store.location.root, synth_store
    config = write_config(tmp_path / "a.yaml", batch_size=4)
    report = caption_flow(root=root, config_file=config)

    # 1. one row per decodable image; the undecodable row is quarantined, the run finished
    images = {r["image_id"]: r for r in store.read("images").to_pylist()}
    captions = store.read("captions").to_pylist()
    assert report["captioned"] == len(images) - 1 == len(captions) == 18
    assert len({row["image_id"] for row in captions}) == len(captions)
    quarantine = [r for r in store.read("quarantine").to_pylist() if r["stage"] == "caption"]
    assert [(q["content_sha256"], q["reason"]) for q in quarantine] == [(UNDECODABLE_ID, "undecodable")]

    # 2. class noun named, every group scored with probabilities, ground truth joins by id
    for row in captions:
        shape = json.loads(images[row["image_id"]]["meta"])["identity"]["shape"]
        assert row["class_name"] == shape and shape in row["composed_caption"]
        assert f"<obj> {shape}" in row["object_caption"] and row["raw_caption"]
        assert (row["raw_words"], row["composed_words"]) == (
            word_count(row["raw_caption"]), word_count(row["composed_caption"]))
        assert {a["attribute"] for a in row["attributes"]} == set(VOCABULARY.groups)
        for values in json.loads(row["scores"]).values():
            assert sum(values.values()) == pytest.approx(1.0, abs=1e-4)
    scored = attribute_accuracy(store, VOCABULARY)
    assert {"color", "shape", "texture", "category", "scene"} <= set(scored)
    assert all(group["n"] == 18 for group in scored.values())

    # 3. the finished run marked the images version it covered; a re-run adds nothing (not even
    # quarantine rows) and moves the mark past this run's own commits, once
    marks = store.read("stage_marks").to_pylist()
    assert [(m["stage"], m["source_version"]) for m in marks] == [("caption", store.version("images"))]
    again = caption_flow(root=root, config_file=config)
    assert again["captioned"] == 0 and again["skipped"] == 19
    assert store.row_count("captions") == 18 and len(quarantine) == 1
    assert store.row_count("stage_marks") == 2
    caption_flow(root=root, config_file=config)
    assert store.row_count("stage_marks") == 2

    # 4. a changed template re-captions under a new hash; readers see only the new rows
    changed = caption_flow(root=root, config_file=write_config(
        tmp_path / "b.yaml", batch_size=8, template="{object}, {scene}. {raw}"))
    assert changed["config_hash"] != report["config_hash"] and changed["captioned"] == 18
    assert store.row_count("captions") == 36
    latest = latest_captions(store, ["image_id", "config_hash", "composed_caption",
                                     "class_name"]).to_pylist()
    assert len(latest) == 18 and {r["config_hash"] for r in latest} == {changed["config_hash"]}
    assert not any(r["composed_caption"].startswith("a photo of") for r in latest)

    # 5. stats read the latest config's rows
    with connect(store) as con:
        result = stats.collect(store, con)
    assert {r["kind"]: r["captions"] for r in result["caption_lengths"]} == {
        "composed": 18, "raw": 18}
    assert len(result["caption_configs"]) == 2 and result["caption_words"]
    per_class = {}
    for row in result["caption_attributes"]:
        per_class.setdefault(row["class"], {}).setdefault(row["attribute"], 0)
        per_class[row["class"]][row["attribute"]] += row["images"]
    shapes = {row["class_name"] for row in latest}
    assert set(per_class) == shapes
    assert sum(groups["color"] for groups in per_class.values()) == 18


def test_unloadable_model_fails_before_data_work(synth_store, tmp_path, prefect_server):
    from flows.caption import caption_flow

    profile = yaml.safe_load(Path("configs/profiles/tiny.yaml").read_text())
    profile["roles"]["captioner"] = {"id": "./no-such-captioner"}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(profile))
    before = {t: synth_store.row_count(t) for t in ("captions", "quarantine")}
    with pytest.raises(ModelLoadError, match="no-such-captioner"):
        caption_flow(root=synth_store.location.root, overrides={"profile": str(path)})
    assert {t: synth_store.row_count(t) for t in before} == before


def test_dreambench_captions_name_the_class(dreambench, tmp_path, ray_local, prefect_server):
    from flows.caption import caption_flow

    root = str(tmp_path / "data")
    store = ShardStore(root)
    ingest_source(str(dreambench), store, IngestSettings(executor="local"))
    report = caption_flow(root=root, config_file=write_config(tmp_path / "c.yaml"))
    images = {r["image_id"]: r["class_name"] for r in
              store.read("images", ["image_id", "class_name"]).to_pylist()}
    captions = store.read("captions").to_pylist()
    assert report["captioned"] == len(images) == len(captions) > 100
    for row in captions:
        assert images[row["image_id"]] in row["composed_caption"]
        assert f"<obj> {images[row['image_id']]}" in row["object_caption"]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_without_gpus_caption_actors_leave_one_cpu_to_the_read_tasks(ray_local, device):
    from tamer.config import RaySettings
    from tasks.caption import CaptionJob, ray_placement

    cpus = ray_local.cluster_resources()["CPU"]
    settings = CaptionSettings(actors=2, batch_size=5)
    job, placement = ray_placement(CaptionJob("tiny", settings, VOCABULARY, ("a", "b", "c"),
                                              device=device), RaySettings())
    assert (job.device, job.torch_threads) == ("cpu", max(1, int(cpus // 2)))
    assert (placement.actors, placement.num_gpus, placement.batch_size) == (2, 0, 5)
    assert placement.num_cpus == max(0.1, (cpus - 1) / 2)  # one CPU stays free
