"""Overlapping writers on one root, on local disk and on a real S3 endpoint (moto server):
4 ingests of folders sharing images lose no row and store no image id twice.

The 4 writers are Python processes calling the ingest task (`ingest_source`) directly, not 4
`tamer ingest` commands: each command would start its own ephemeral Prefect server, and 4 of
those at once on a 2-core machine contend for minutes before any ingest starts.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile
from storage.shards import ShardStore

REPO = Path(__file__).resolve().parents[1]
WRITERS, OWN, SHARED = 4, 12, 8

WRITER = """
import sys, time
from pathlib import Path
from storage.shards import ShardStore
from tamer.config import IngestSettings
from tasks.ingest import ingest_source
go = Path(sys.argv[3])
while not go.exists():  # start together: the point is the overlap
    time.sleep(0.01)
ingest_source(sys.argv[1], ShardStore(sys.argv[2]),
              IngestSettings(executor="local", shard_rows=3, files_per_chunk=4))
"""


def make_folders(base: Path) -> tuple[list[Path], set[str]]:
    """WRITERS folders: OWN images each, plus the same SHARED images in every one."""
    shared = {f"shared{i}.png": hostile.png_bytes(hostile.noise(24, seed=1000 + i))
              for i in range(SHARED)}
    folders, files = [], set()
    for w in range(WRITERS):
        folder = base / f"src{w}"
        folder.mkdir(parents=True)
        for i in range(OWN):
            (folder / f"own{i}.png").write_bytes(hostile.png_bytes(hostile.noise(24, seed=w * 100 + i)))
        for name, data in shared.items():
            (folder / name).write_bytes(data)
        folders.append(folder)
        files |= {str(path) for path in folder.iterdir()}
    return folders, files


def run_writers(folders: list[Path], root: str, go: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), root, str(go)],
                                env=env, stderr=subprocess.PIPE, text=True) for folder in folders]
    time.sleep(1.0)  # let them import; the go file releases them at once
    go.touch()
    for writer in writers:
        _, stderr = writer.communicate(timeout=300)
        assert writer.returncode == 0, stderr[-2000:]


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_overlapping_ingests_lose_nothing_and_store_each_image_once(tmp_path, backend, request):
    folders, files = make_folders(tmp_path / "sources")
    for attempt in range(3):
        root = (str(tmp_path / f"root{attempt}") if backend == "local"
                else request.getfixturevalue("s3_root") + str(attempt))
        run_writers(folders, root, tmp_path / f"go{attempt}")
        store = ShardStore(root)
        images = store.read("images", ["image_id", "source"]).to_pylist()
        duplicates = store.read("duplicates", ["image_id", "source"]).to_pylist()
        ids = collections.Counter(row["image_id"] for row in images)
        assert len(ids) == WRITERS * OWN + SHARED, f"attempt {attempt}: images lost"
        assert ids.most_common(1)[0][1] == 1, f"attempt {attempt}: an image id stored twice"
        landed = collections.Counter(row["source"] for row in images + duplicates)
        assert set(landed) == files and max(landed.values()) == 1, f"attempt {attempt}"
        runs = store.read("ingest_runs", ["ingested", "duplicates"]).to_pylist()
        assert sum(run["ingested"] for run in runs) == len(images)
        assert sum(run["duplicates"] for run in runs) == len(duplicates)
