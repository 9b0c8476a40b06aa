"""The retrain gate: has the dataset changed enough since the last completed training run?

`decide` is a pure function of the facts; `judge` gathers the facts from the shards and
records every decision in `retrain_decisions`, which is also what debounces requests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import pyarrow as pa

from storage.shards import ShardStore
from tamer.config import RetrainSettings


@dataclass(frozen=True)
class Facts:
    fingerprint: str
    images: int
    trained_fingerprint: str | None  # latest completed training run's dataset version
    trained_images: int  # images in that version (0 when never trained)
    last_request: dt.datetime | None  # latest decision that requested a retrain


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    added: int
    fraction: float


def decide(facts: Facts, policy: RetrainSettings, now: dt.datetime) -> Decision:
    added = max(0, facts.images - facts.trained_images)
    fraction = added / facts.images if facts.images else 0.0

    def result(retrain: bool, reason: str) -> Decision:
        return Decision(retrain, reason, added, fraction)

    if facts.images == 0:
        return result(False, "the dataset is empty")
    if facts.fingerprint == facts.trained_fingerprint:
        return result(False, "already trained on this dataset version")
    if added < policy.min_new_images and fraction < policy.min_fraction:
        return result(False, f"{added} new images ({fraction:.1%}) is below the thresholds "
                             f"({policy.min_new_images} or {policy.min_fraction:.0%})")
    if facts.last_request and (now - facts.last_request).total_seconds() < policy.debounce_s:
        return result(False, f"debounced: a retrain was requested at {facts.last_request:%X}")
    if facts.trained_fingerprint is None:
        return result(True, "no completed training run yet")
    return result(True, f"{added} new images ({fraction:.1%}) since the trained version")


def gather(store: ShardStore) -> Facts:
    runs = [r for r in store.read("runs", ["run_id", "status", "dataset_fingerprint",
                                           "recorded_at"]).to_pylist()]
    latest: dict[str, dict] = {}
    for row in sorted(runs, key=lambda r: r["recorded_at"]):
        latest[row["run_id"]] = row  # newest row per run id wins
    completed = sorted((r for r in latest.values() if r["status"] == "completed"),
                       key=lambda r: r["recorded_at"])
    trained = completed[-1]["dataset_fingerprint"] if completed else None
    ingests = store.read("ingest_runs", ["fingerprint", "total_images"]).to_pylist()
    counts = {r["fingerprint"]: r["total_images"] or 0 for r in ingests}
    requests = [r["decided_at"] for r in store.read(
        "retrain_decisions", ["decided_at", "retrain"]).to_pylist() if r["retrain"]]
    return Facts(fingerprint=store.fingerprint(), images=store.row_count("images"),
                 trained_fingerprint=trained, trained_images=counts.get(trained, 0),
                 last_request=max(requests) if requests else None)


def judge(store: ShardStore, policy: RetrainSettings) -> tuple[Facts, Decision]:
    """Decide and record the decision (the record is what later calls debounce against)."""
    now = dt.datetime.now(dt.UTC)
    facts = gather(store)
    decision = decide(facts, policy, now)
    store.write("retrain_decisions", pa.Table.from_pylist([{
        "decided_at": now, "fingerprint": facts.fingerprint,
        "trained_fingerprint": facts.trained_fingerprint, "images": facts.images,
        **{k: v for k, v in asdict(decision).items()},
    }]))
    return facts, decision
