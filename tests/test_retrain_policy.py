"""The retrain gate: thresholds, debounce, and facts read from real shards."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from storage.shards import ShardStore
from tamer.config import RetrainSettings
from tasks.retrain_policy import Facts, decide, judge

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
POLICY = RetrainSettings(min_new_images=10, min_fraction=0.5, debounce_s=600)


def facts(images=100, trained=90, fingerprint="b", trained_fp="a", last_request=None):
    return Facts(fingerprint, images, trained_fp, trained, last_request)


def test_thresholds_either_suffices():
    assert not decide(facts(images=100, trained=95), POLICY, NOW).retrain  # 5 new, 5%
    assert decide(facts(images=100, trained=90), POLICY, NOW).retrain  # 10 new
    assert decide(facts(images=8, trained=4), POLICY, NOW).retrain  # 4 new but 50%
    assert decide(facts(trained=0, trained_fp=None), POLICY, NOW).retrain  # never trained


def test_same_version_empty_and_debounce():
    assert not decide(facts(fingerprint="a", trained_fp="a"), POLICY, NOW).retrain
    assert not decide(facts(images=0, trained=0), POLICY, NOW).retrain
    recent = facts(trained=0, last_request=NOW - dt.timedelta(seconds=60))
    assert "debounced" in decide(recent, POLICY, NOW).reason
    old = facts(trained=0, last_request=NOW - dt.timedelta(seconds=601))
    assert decide(old, POLICY, NOW).retrain


def test_judge_reads_runs_and_ingests_and_debounces(tmp_path):
    store = ShardStore(str(tmp_path))
    now = dt.datetime.now(dt.UTC)

    def ingest_row(fingerprint: str, total: int) -> pa.Table:
        return pa.Table.from_pylist([{
            "run_id": fingerprint, "source": "s", "started_at": now, "finished_at": now,
            "seen": total, "ingested": total, "unchanged": 0, "duplicates": 0,
            "quarantined": 0, "fingerprint": fingerprint, "total_images": total}])

    store.write("ingest_runs", ingest_row("v1", 0))
    _, first = judge(store, POLICY)
    assert not first.retrain and first.reason == "the dataset is empty"
    store.write("runs", pa.Table.from_pylist([{
        "run_id": "r1", "status": status, "dataset_fingerprint": "v1", "config_hash": "c",
        "code_version": "x", "started_at": now, "ended_at": now, "step": 1,
        "final_metrics": None, "checkpoint_uri": None, "pipeline_uri": None, "error": None,
        "config": "{}", "recorded_at": now + dt.timedelta(seconds=i)}
        for i, status in enumerate(["running", "completed"])]))
    from test_storage import image_rows

    store.write("images", image_rows(20))
    facts_now, decision = judge(store, POLICY)
    assert facts_now.trained_fingerprint == "v1" and decision.retrain and decision.added == 20
    _, again = judge(store, POLICY)  # same change, judged again right away
    assert not again.retrain and "debounced" in again.reason
    assert store.row_count("retrain_decisions") == 3
