"""The app tests' root: synth renders and a hostile source ingested serially, a tiny saved
pipeline registered as training runs, and the derived tables every tab reads."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
from hostile import MAX_BYTES
from hostile import build as build_hostile

from storage.schemas import schema_for
from storage.shards import ShardStore
from tamer.app.reader import AppContext
from tamer.config import EmbedSettings, IngestSettings, load_config
from tamer.synth import generate as synth
from tasks.embed import embed_dataset
from tasks.index import build_index
from tasks.ingest import ingest_source

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def build_root(base) -> tuple[AppContext, dict]:
    """Synth objects and the hostile source ingested into base/data, a tiny pipeline saved
    and registered (two completed runs, a newer failed one), captions, near-duplicates,
    pairs, an evaluation with its report, and a kNN index; returns the app's context and the
    hostile source's expectations."""
    synth(base / "synth", n_objects=3, views=3, size=64, seed=0)
    expect = build_hostile(base / "hostile")
    config = load_config(root=str(base / "data"), **{"ingest.max_bytes": MAX_BYTES})
    store = ShardStore(config.root)
    settings = IngestSettings(max_bytes=MAX_BYTES, executor="local")
    for source in (base / "synth", base / "hostile" / "src"):
        ingest_source(str(source), store, settings)
    _register_runs(store, config, base / "pipeline")
    _derived_rows(store)
    embed_dataset(store, "tiny", EmbedSettings(executor="local"))
    build_index(store, "tiny")
    return AppContext(config, index_url=None), expect


def _register_runs(store: ShardStore, config, pipeline) -> None:
    from model_fixtures import tiny_model

    from tasks.runs import COMPLETED, FAILED, pin_versions, record_run, record_versions, \
        write_metrics

    tiny_model().save_pretrained(pipeline)
    fingerprint = store.fingerprint()
    for run_id, status, hours in (("train-old", COMPLETED, 3), ("train-new", COMPLETED, 2),
                                  ("train-failed", FAILED, 1)):
        started = NOW - dt.timedelta(hours=hours)
        record_run(store, run_id, status, config, fingerprint, started,
                   ended_at=started + dt.timedelta(minutes=6), step=20,
                   final_metrics={"loss": 0.25}, error="boom" if status == FAILED else None,
                   pipeline_uri=None if status == FAILED else str(pipeline))
        record_versions(store, run_id, pin_versions(store))
    write_metrics(store, "train-new", [
        {"step": step, "loss": 1.0 / step, "diffusion": 0.8 / step, "identity": 0.2 / step,
         "lr": 1e-4, "grad_norm": None, "samples_per_s": 10.0, "data_share": 0.1}
        for step in (10, 20)])


def _derived_rows(store: ShardStore) -> None:
    """What caption, embed, pairs and evaluate would commit, for three synth subjects."""
    images = store.read("images", ["image_id", "subject", "class_name"]).to_pylist()
    synth_ids = sorted((row for row in images if (row["subject"] or "").startswith("obj")),
                       key=lambda row: (row["subject"], row["image_id"]))
    first = [row["image_id"] for row in synth_ids if row["subject"] == synth_ids[0]["subject"]]
    _write(store, "captions", [{
        "image_id": image_id, "captioner_id": "tiny", "clip_id": "tiny", "config_hash": "c1",
        "class_name": "toy", "raw_caption": f"raw words {i}", "composed_caption": f"a red toy {i}",
        "object_caption": "a red {}", "scores": "{}", "created_at": NOW,
        "attributes": [{"attribute": "shape", "value": "star", "probability": 0.4, "named": False},
                       {"attribute": "color", "value": "red", "probability": 0.9, "named": True}]}
        for i, image_id in enumerate(first)])
    a, b, c = first[:3]
    d, e = [row["image_id"] for row in synth_ids if row["image_id"] not in first][:2]
    _write(store, "near_duplicates", [
        {"image_id": x, "other_id": y, "cosine": cos, "threshold": 0.9, "config_hash": "e1",
         "found_at": NOW} for x, y, cos in ((a, b, 0.97), (b, c, 0.95), (d, e, 0.99))])
    _write(store, "pairs", [
        {"subject": "obj-group", "reference_id": ref, "target_id": tgt, "snapshot": snap,
         "created_at": NOW + dt.timedelta(minutes=minutes)}
        for snap, minutes, ref, tgt in (("old", 0, a, c), ("new", 1, a, b), ("new", 1, b, a))])
    _write(store, "eval_results", [{
        "eval_run_id": "eval-1", "method": "ours", "subject": "obj", "class_name": "toy",
        "prompt_index": 0, "prompt": "a toy", "seed": 0, "clip_i": 0.5, "clip_t": 0.2,
        "dino": 0.1, "prepare_s": 0.0, "generate_s": 0.1, "subject_bytes": 0,
        "image_path": "images/x.png", "data_source": "dataset:x", "dataset_fingerprint": "f",
        "model_run_id": "train-new", "pipeline_uri": None, "profile": "tiny",
        "config_hash": "h", "code_version": "v", "created_at": NOW}])
    report = os.path.join(store.location.root, "reports", "eval-1")
    os.makedirs(report)
    with open(os.path.join(report, "index.html"), "w") as handle:
        handle.write("<h1>evaluation eval-1</h1>")


def _write(store: ShardStore, table: str, rows: list[dict]) -> None:
    schema = schema_for(table)
    store.write(table, pa.Table.from_pylist([dict.fromkeys(schema.names) | row for row in rows],
                                            schema=schema))
