"""The retrain gate: has the dataset changed enough since the last completed training run?

`decide` is a pure function of the facts; `judge` gathers the facts from the tables and
records every decision in `retrain_decisions`. New images are counted by versions: rows of
`images` now minus rows at the version the latest completed run pinned (time travel). With `debounce_s` > 0 the gate debounces: a
change worth training on is deferred to the end of a window (the caller schedules one
re-evaluation there, `due`), so a burst of commits yields one retrain on all of them; a change
judged while a re-evaluation is pending is deferred to it; at most one request per window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from storage.pinned import PinnedStore
from storage.shards import ShardStore
from tamer.config import RetrainSettings

DEFERRED = "deferred"  # how a deferred decision's reason begins


@dataclass(frozen=True)
class Facts:
    fingerprint: str
    images: int
    trained_fingerprint: str | None  # latest completed training run's dataset version
    trained_images: int | None  # images in the version it pinned (0: never trained; None: the
    # run pinned nothing, recorded by tamer before runs pinned versions: all images count as new)
    last_request: dt.datetime | None  # latest decision that requested a retrain
    requested_fingerprint: str | None = None  # the dataset version that request was for
    pending_until: dt.datetime | None = None  # a re-evaluation already scheduled (orchestrator)


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    added: int
    fraction: float
    defer_until: dt.datetime | None = None  # set: judge again then


def decide(facts: Facts, policy: RetrainSettings, now: dt.datetime, due: bool = False,
           can_defer: bool = True) -> Decision:
    """`due`: this is the deferred re-evaluation; `can_defer`: something can run one later
    (else a request inside the window is dropped, as a plain rate limit)."""
    added = max(0, facts.images - (facts.trained_images or 0))
    fraction = added / facts.images if facts.images else 0.0

    def result(retrain: bool, reason: str) -> Decision:
        return Decision(retrain, reason, added, fraction)

    def defer(until: dt.datetime, why: str) -> Decision:
        return Decision(False, f"{DEFERRED} until {until:%X}: {why}", added, fraction, until)

    if facts.images == 0:
        return result(False, "the dataset is empty")
    if facts.fingerprint == facts.trained_fingerprint:
        return result(False, "already trained on this dataset version")
    if facts.fingerprint == facts.requested_fingerprint:
        return result(False, "a retrain of this dataset version was already requested")
    if added < policy.min_new_images and fraction < policy.min_fraction:
        return result(False, f"{added} new images ({fraction:.1%}) is below the thresholds "
                             f"({policy.min_new_images} or {policy.min_fraction:.0%})")
    window = dt.timedelta(seconds=policy.debounce_s)
    window_end = facts.last_request + window if facts.last_request else None
    if not can_defer and window_end and now < window_end:
        return result(False, f"debounced: a retrain was requested at {facts.last_request:%X}")
    if can_defer and policy.debounce_s and not due:
        if facts.pending_until:
            return defer(facts.pending_until, "the scheduled re-evaluation decides")
        return defer(now + window, "more commits may follow")
    if can_defer and window_end and now < window_end:
        return defer(window_end, f"a retrain was requested at {facts.last_request:%X}")
    if facts.trained_fingerprint is None:
        return result(True, "no completed training run yet")
    if facts.trained_images is None:
        return result(True, "the latest completed run pinned no table versions (older tamer)")
    return result(True, f"{added} new images ({fraction:.1%}) since the trained version")


def gather(store: ShardStore, pending_until: dt.datetime | None = None) -> Facts:
    from tasks.runs import COMPLETED, list_runs  # the run registry's reader: one definition

    completed = [run for run in list_runs(store) if run["status"] == COMPLETED]
    trained = max(completed, key=lambda run: run["recorded_at"]) if completed else None
    requests = sorted((r for r in store.read(
        "retrain_decisions", ["decided_at", "fingerprint", "retrain"]).to_pylist() if r["retrain"]),
        key=lambda r: r["decided_at"])
    return Facts(fingerprint=store.fingerprint(), images=store.row_count("images"),
                 trained_fingerprint=trained["dataset_fingerprint"] if trained else None,
                 trained_images=_trained_images(store, trained),
                 last_request=requests[-1]["decided_at"] if requests else None,
                 requested_fingerprint=requests[-1]["fingerprint"] if requests else None,
                 pending_until=pending_until)


def _trained_images(store: ShardStore, run: dict | None) -> int | None:
    """Rows of `images` at the version `run` pinned; 0 without a run, None if it pinned none."""
    if run is None:
        return 0
    if "images" not in run["table_versions"]:
        return None
    return PinnedStore(store, {"images": run["table_versions"]["images"]}).row_count("images")


def judge(store: ShardStore, policy: RetrainSettings, due: bool = False, can_defer: bool = True,
          pending_until: dt.datetime | None = None) -> tuple[Facts, Decision]:
    """Decide and record the decision (the record is what later calls debounce against)."""
    now = dt.datetime.now(dt.UTC)
    facts = gather(store, pending_until)
    decision = decide(facts, policy, now, due, can_defer)
    store.write("retrain_decisions", pa.Table.from_pylist([{
        "decided_at": now, "fingerprint": facts.fingerprint,
        "trained_fingerprint": facts.trained_fingerprint, "images": facts.images,
        "added": decision.added, "fraction": decision.fraction, "retrain": decision.retrain,
        "reason": decision.reason,
    }]))
    return facts, decision
