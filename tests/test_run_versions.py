"""Runs pinned to the table versions they read: the plan, the retrain gate and `runs show`."""

from __future__ import annotations

import datetime as dt
import json

from storage.pinned import PinnedStore
from storage.shards import ShardStore
from tamer.config import IngestSettings, RetrainSettings, load_config
from tamer.synth import generate
from tasks import runs
from tasks.ingest import ingest_source
from tasks.retrain_policy import gather
from tasks.train_data import build_plan
from synth_data import ingested_synth
from test_storage import image_rows


def _completed_run(store: ShardStore, run_id: str) -> dict:
    """Register a run the way the train flow does (pins, then rows), without training."""
    versions = runs.pin_versions(store)
    runs.record_versions(store, run_id, versions)
    now = dt.datetime.now(dt.UTC)
    config = load_config(None, root=store.location.root)
    runs.record_run(store, run_id, runs.COMPLETED, config, PinnedStore(store, versions).fingerprint(),
                    now, ended_at=now)
    return runs.get_run(store, run_id)


def test_a_runs_plan_rebuilt_after_more_ingest_is_the_same(tmp_path):
    store = ingested_synth(tmp_path, 4, 3, size=32, seed=0)
    run = _completed_run(store, "r1")
    plan = build_plan(runs.pinned_store(store, run))
    generate(tmp_path / "more", n_objects=3, views=3, size=32, seed=1)
    ingest_source(str(tmp_path / "more"), store, IngestSettings(executor="local"))
    assert store.version("images") > run["table_versions"]["images"]

    again = build_plan(runs.pinned_store(store, runs.get_run(store, "r1")))
    assert again.domain.equals(plan.domain) and again.general.equals(plan.general)
    assert build_plan(store).general.num_rows > plan.general.num_rows  # today's data differs
    assert run["dataset_fingerprint"] != store.fingerprint()
    # a second recording for the same run does not move its pins
    runs.record_versions(store, "r1", runs.pin_versions(store))
    assert runs.get_run(store, "r1")["table_versions"] == run["table_versions"]


def test_the_gate_counts_rows_added_since_the_pinned_version(tmp_path):
    store = ShardStore(str(tmp_path))
    store.write("images", image_rows(20))
    _completed_run(store, "r1")
    store.write("images", image_rows(5, start=20))
    facts = gather(store)
    assert (facts.images, facts.trained_images) == (25, 20)
    assert facts.trained_fingerprint != facts.fingerprint


def test_a_pinned_table_without_a_commit_reads_empty(tmp_path):
    store = ShardStore(str(tmp_path))
    pinned = PinnedStore(store, {"images": -1})
    store.write("images", image_rows(3))
    assert pinned.row_count("images") == 0 and pinned.read("images").num_rows == 0
    assert store.row_count("images") == 3
    assert PinnedStore(store, {"images": store.version("images")}).row_count("images") == 3


def test_runs_show_and_sql_as_of_a_run_read_its_pinned_versions(tmp_path):
    from typer.testing import CliRunner

    from tamer.cli import app

    store = ShardStore(str(tmp_path / "data"))
    store.write("images", image_rows(4))
    run = _completed_run(store, "r1")
    store.write("images", image_rows(3, start=4))

    def tamer(*args: str):
        return CliRunner().invoke(app, ["--root", store.location.root, *args])

    count = "SELECT count(*) AS n FROM images"
    assert json.loads(tamer("sql", count, "--json").stdout) == [{"n": 7}]
    assert json.loads(tamer("sql", "--as-of", "r1", count, "--json").stdout) == [{"n": 4}]
    assert json.loads(tamer("sql", count, "--json").stdout) == [{"n": 7}]  # the shared catalog
    shown = json.loads(tamer("runs", "show", "r1", "--json").stdout)
    assert shown["table_versions"] == run["table_versions"]
    assert shown["table_versions"]["images"] == store.version("images") - 1
    table = tamer("runs", "show", "r1")
    assert table.exit_code == 0 and "images" in table.stdout
    assert [row["run_id"] for row in json.loads(tamer("runs", "--json").stdout)] == ["r1"]
    for args in (["runs", "show", "nope"], ["sql", "--as-of", "nope", count]):
        missing = tamer(*args)
        assert missing.exit_code == 2 and "no training run nope" in missing.stderr


def test_catalog_at_versions_on_an_s3_root(s3_root):
    from storage.catalog import read_only_query

    store = ShardStore(s3_root)
    store.write("images", image_rows(2))
    pinned = {"images": store.version("images")}
    store.write("images", image_rows(3, start=2))
    count = "SELECT count(*) FROM images"
    assert read_only_query(store, count, pinned)[1] == [(2,)]
    assert read_only_query(store, count, {"images": -1})[1] == [(0,)]
    assert read_only_query(store, count)[1] == [(5,)]
