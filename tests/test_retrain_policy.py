"""The retrain gate: thresholds, deferral to the end of a window, and facts read from real shards.

The deferred re-evaluation running on a real Prefect server is in tests/test_orchestration.py."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from storage.shards import ShardStore
from tamer.config import RetrainSettings
from tasks import runs
from tasks.retrain_policy import DEFERRED, Facts, decide, judge

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
POLICY = RetrainSettings(min_new_images=10, min_fraction=0.5, debounce_s=600)


def facts(images=100, trained=90, fingerprint="b", trained_fp="a", last_request=None,
          requested_fp=None, pending_until=None):
    return Facts(fingerprint, images, trained_fp, trained, last_request, requested_fp, pending_until)


def test_thresholds_either_suffices():
    def due(f: Facts) -> bool:  # judged at the end of a window: thresholds alone decide
        return decide(f, POLICY, NOW, due=True).retrain

    assert not due(facts(images=100, trained=95))  # 5 new, 5%
    assert due(facts(images=100, trained=90))  # 10 new
    assert due(facts(images=8, trained=4))  # 4 new but 50%
    assert due(facts(trained=0, trained_fp=None))  # never trained


def test_same_version_empty_and_already_requested():
    assert not decide(facts(fingerprint="a", trained_fp="a"), POLICY, NOW, due=True).retrain
    assert not decide(facts(images=0, trained=0), POLICY, NOW, due=True).retrain
    already = decide(facts(requested_fp="b"), POLICY, NOW, due=True)
    assert not already.retrain and already.defer_until is None and "already requested" in already.reason


def test_a_change_is_deferred_to_one_re_evaluation_at_the_window_end():
    first = decide(facts(), POLICY, NOW)  # the first commit of a burst: wait for the rest
    assert not first.retrain and first.reason.startswith(DEFERRED)
    assert first.defer_until == NOW + dt.timedelta(seconds=600)
    later = decide(facts(pending_until=first.defer_until), POLICY, NOW + dt.timedelta(seconds=60))
    assert later.defer_until == first.defer_until  # joins the pending re-evaluation
    assert decide(facts(pending_until=first.defer_until), POLICY, first.defer_until, due=True).retrain
    # a request at most once per window, deferred (not dropped) to the window's end
    recent = facts(last_request=NOW - dt.timedelta(seconds=60), requested_fp="a")
    assert decide(recent, POLICY, NOW, due=True).defer_until == NOW + dt.timedelta(seconds=540)
    no_window = RetrainSettings(min_new_images=10, min_fraction=0.5, debounce_s=0)
    assert decide(facts(), no_window, NOW).retrain  # debounce 0: at once


def test_without_a_scheduler_a_request_in_the_window_is_dropped():
    """Nothing could run a deferred re-evaluation: request at once, at most once per window."""
    assert decide(facts(), POLICY, NOW, can_defer=False).retrain
    recent = facts(last_request=NOW - dt.timedelta(seconds=60), requested_fp="a")
    dropped = decide(recent, POLICY, NOW, can_defer=False)
    assert not dropped.retrain and dropped.defer_until is None and "debounced" in dropped.reason


def test_judge_reads_runs_and_ingests_and_debounces(tmp_path):
    store = ShardStore(str(tmp_path))
    now = dt.datetime.now(dt.UTC)

    _, first = judge(store, POLICY)
    assert not first.retrain and first.reason == "the dataset is empty"
    runs.record_versions(store, "r1", runs.pin_versions(store))  # trained on no image
    store.write("runs", pa.Table.from_pylist([{
        "run_id": "r1", "status": status, "dataset_fingerprint": "v1", "config_hash": "c",
        "code_version": "x", "started_at": now, "ended_at": now, "step": 1,
        "final_metrics": None, "checkpoint_uri": None, "pipeline_uri": None, "error": None,
        "config": "{}", "recorded_at": now + dt.timedelta(seconds=i)}
        for i, status in enumerate(["running", "completed"])]))
    from test_storage import image_rows

    store.write("images", image_rows(20))
    facts_now, deferred = judge(store, POLICY)
    assert facts_now.trained_fingerprint == "v1" and deferred.added == 20 and deferred.defer_until
    _, decision = judge(store, POLICY, due=True)  # the re-evaluation
    assert decision.retrain
    _, again = judge(store, POLICY, due=True)  # the same version, judged again right away
    assert not again.retrain and "already requested" in again.reason
    store.write("images", image_rows(20, start=20))
    _, more = judge(store, POLICY, due=True)  # new data, but inside the request's window
    assert not more.retrain and more.defer_until is not None
    rows = store.read("retrain_decisions").to_pylist()
    assert [(r["retrain"], r["reason"].split(" ")[0]) for r in rows][1:] == [
        (False, DEFERRED), (True, "20"), (False, "a"), (False, DEFERRED)]
