"""The stages' shared pieces on a real store: retries narrow a failure to the bad items, the
quarantine records an item once per reason over runs, the writer commits full shards."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from storage.shards import ShardStore
from tasks.stage import Quarantine, ShardWriter, with_retries


def test_retries_then_each_item_alone_then_only_bad_items_fail():
    calls: list[list[int]] = []

    def work(items):
        calls.append(list(items))
        if 3 in items:
            raise RuntimeError("bad item 3")
        return [item * 10 for item in items]

    rows = with_retries([1, 2, 3, 4], work, retries=1,
                        failed=lambda item, exc: f"failed {item}: {exc}")
    assert rows == [10, 20, "failed 3: bad item 3", 40]
    assert calls[:2] == [[1, 2, 3, 4]] * 2  # the batch and its retry
    assert calls.count([3]) == 2  # the bad item alone, and its retry


def test_retries_recover_a_transient_failure_without_splitting():
    attempts = []

    def flaky(items):
        attempts.append(len(items))
        if len(attempts) == 1:
            raise RuntimeError("transient")
        return list(items)

    assert with_retries(["a", "b"], flaky, retries=1, failed=lambda i, e: None) == ["a", "b"]
    assert attempts == [2, 2]


def test_quarantine_records_once_per_item_and_reason_over_runs(tmp_path):
    store = ShardStore(str(tmp_path))
    first = Quarantine(store, "caption")
    first.add("a.png", "sha-a", "undecodable", "x")
    first.add("a.png", "sha-a", "undecodable", "again in this run")
    first.add("a.png", "sha-a", "caption_failed", "y")
    assert (first.new, first.reasons) == (2, {"undecodable": 2, "caption_failed": 1})
    first.commit("run-1")
    second = Quarantine(store, "caption")
    second.add("renamed.png", "sha-a", "undecodable", "same bytes")
    other_stage = Quarantine(store, "embed")
    other_stage.add("a.png", "sha-a", "undecodable", "embed's own record")
    assert (second.new, second.reasons, other_stage.new) == (0, {"undecodable": 1}, 1)
    by_source = Quarantine(store, "ingest", by="source")
    by_source.add("b.png", None, "chunk_failed", "no hash: the file never read")
    by_source.add("b.png", None, "chunk_failed", "twice")
    assert by_source.new == 1
    rows = store.read("quarantine", ["stage", "content_sha256", "reason"]).to_pylist()
    assert sorted((r["stage"], r["reason"]) for r in rows) == [("caption", "caption_failed"),
                                                                ("caption", "undecodable")]


def test_writer_commits_full_shards_and_the_rest_on_flush(tmp_path):
    store = ShardStore(str(tmp_path))
    committed = []
    writer = ShardWriter(store, "duplicates", 3, "run-1",
                         committed=lambda shard, info: committed.append(info.rows))

    def rows(n: int, start: int) -> pa.Table:
        now = dt.datetime.now(dt.UTC)
        return pa.Table.from_pylist([{"image_id": f"i{k}", "source": f"s{k}", "kept_source": "k",
                                      "seen_at": now} for k in range(start, start + n)])

    writer.add(rows(2, 0))
    assert committed == []  # below a shard: nothing committed yet
    writer.add(rows(2, 2))
    writer.add(rows(1, 4))
    writer.flush()
    writer.flush()  # nothing pending: no empty commit
    assert committed == [4, 1] and (writer.rows, writer.shards) == (5, 2)
    assert store.row_count("duplicates") == 5

