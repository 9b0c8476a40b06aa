"""The nightly `maintain` flow compacts every table under the root, on a real Prefect server."""

from __future__ import annotations

import pytest

from storage.shards import ShardStore
from test_storage import image_rows


def test_maintain_flow_compacts_and_keeps_every_row(tmp_path, prefect_server):
    from flows.maintain import maintain_flow

    store = ShardStore(str(tmp_path / "root"))
    for start in range(0, 8, 2):
        store.write("images", image_rows(2, start=start))
    with pytest.raises(ValueError, match="retention_hours"):
        maintain_flow(root=store.location.root, retention_hours=-1)
    assert len(store.shards("images")) == 4

    report = maintain_flow(root=store.location.root, retention_hours=1)
    assert report["images"]["files_removed_by_compaction"] == 4
    assert len(store.shards("images")) == 1
    assert sorted(store.read("images", ["image_id"]).column(0).to_pylist()) == [
        f"id{i:05d}" for i in range(8)]
