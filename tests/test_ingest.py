"""Ingest: DreamBench counts, hostile inputs on every executor, nothing dropped (every listed
entry in exactly one table), failing readers, idempotence, kill safety."""

from __future__ import annotations

import collections
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from storage.catalog import connect
from storage.images import ImageLimits
from storage.shards import ShardStore
from storage.sources import SourceChunk
from tamer.config import IngestSettings, RaySettings
from tasks.ingest import decode_chunks, ingest_source
import hostile

REPO = Path(__file__).resolve().parents[1]


def table_counts(store: ShardStore) -> dict[str, int]:
    return {t: store.row_count(t) for t in ("images", "quarantine", "duplicates")}


def test_dreambench_counts_and_classes(dreambench, tmp_path, ray_local, prefect_server):
    from flows.ingest import ingest_flow

    report = ingest_flow(str(dreambench), root=str(tmp_path / "data"))
    store = ShardStore(str(tmp_path / "data"))
    expected = {d.name: len(list(d.glob("*.jpg"))) for d in dreambench.iterdir() if d.is_dir()}
    with connect(store) as con:
        rows = con.execute("SELECT subject, any_value(class_name), count(*) FROM images "
                           "GROUP BY 1").fetchall()
    assert len(expected) == 26
    assert {subject: count for subject, _, count in rows} == expected
    assert all(4 <= count <= 6 for count in expected.values())
    classes = {subject: cls for subject, cls, _ in rows}
    assert classes["bear_plushie"] == "stuffed animal" and classes["dog3"] == "dog"
    assert report["ingested"] == sum(expected.values()) and report["quarantined"] == 0


@pytest.mark.timeout(300)  # hostile FIFOs: opening one blocks forever; fail, not hang
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_hostile_inputs_are_quarantined_with_reasons(tmp_path, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    expect = hostile.build(tmp_path)
    store = ShardStore(str(tmp_path / "data"))
    settings = IngestSettings(executor=executor, files_per_chunk=4, max_bytes=hostile.MAX_BYTES)
    report = ingest_source(str(tmp_path / "src"), store, settings)

    src = str(tmp_path / "src") + "/"
    images = {r["source"].replace(src, ""): r for r in store.read("images").to_pylist()}
    quarantine = {r["source"].replace(src, ""): r["reason"]
                  for r in store.read("quarantine").to_pylist()}
    duplicates = {r["source"].replace(src, "") for r in store.read("duplicates").to_pylist()}
    for name, want in expect.items():
        if want["outcome"] == "ingested":
            row = images[name]
            assert Image.open(io.BytesIO(row["image"])).mode == "RGB", name
            assert row["mode"] == want.get("mode", row["mode"])
            if "size" in want:
                assert (row["width"], row["height"]) == want["size"]
            if "flag" in want:
                assert want["flag"] in row["flags"]
            if want.get("text"):
                assert row["text"]
            if "subject" in want:
                assert row["subject"] == want["subject"]
            if "pixel" in want:
                assert Image.open(io.BytesIO(row["image"])).getpixel((0, 0)) == want["pixel"]
        elif want["outcome"] == "quarantined":
            assert quarantine.get(name) == want["reason"], (name, quarantine.get(name))
        else:
            assert name in duplicates
    # the parquet row pointing at subject_a/00.png holds the same bytes: a duplicate too
    assert duplicates == {"subject_b/copy_of_00.png", "table.parquet::1",
                          "shard-000.tar::subject_t/005.png"}
    assert "README.md" not in quarantine
    assert report.quarantined == len(quarantine) and report.ingested == len(images)
    assert images["subject_a/00.png"]["subject"] == "subject_a"
    assert images["shard-000.tar::subject_t/000.png"]["subject"] == "subject_t"

    before = table_counts(store)
    again = ingest_source(str(tmp_path / "src"), store, settings)
    assert table_counts(store) == before
    assert again.ingested == 0 and again.quarantined == 0 and again.duplicates == 0


def stored_sources(store: ShardStore, prefix: str) -> dict[str, list[str]]:
    """table -> the sources of its rows, relative to prefix."""
    return {table: [row["source"].replace(prefix, "") for row in store.read(table).to_pylist()]
            for table in ("images", "duplicates", "quarantine")}


def walked_entries(src: Path) -> set[str]:
    """What ingest must account for, found here without the code under test: every
    non-hidden entry that is not a plain directory or a side file (links not followed)."""
    entries = set()
    for directory, subdirs, files in os.walk(src):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        links = [d for d in subdirs if os.path.islink(os.path.join(directory, d))]
        for name in files + links:
            side = name.endswith((".md", ".txt", ".json", ".mask.png"))
            if not name.startswith(".") and not side:
                entries.add(os.path.relpath(os.path.join(directory, name), src))
    return entries


@pytest.mark.timeout(300)  # hostile FIFOs: opening one blocks forever; fail, not hang
@pytest.mark.parametrize("executor", ["local", "ray"])
@pytest.mark.parametrize("source", ["folder", "tar"])
def test_every_listed_entry_lands_in_exactly_one_table(tmp_path, source, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    expect = hostile.build(tmp_path)
    src = tmp_path / "src"
    if source == "tar":  # the tar alone: its members are the listed entries
        expect = {name: want for name, want in expect.items() if name.startswith("shard-000.tar::")}
    store = ShardStore(str(tmp_path / "data"))
    settings = IngestSettings(executor=executor, files_per_chunk=3, max_bytes=hostile.MAX_BYTES)
    report = ingest_source(str(src / "shard-000.tar") if source == "tar" else str(src), store,
                           settings)

    tables = stored_sources(store, f"{src}/")
    stored = [name for sources in tables.values() for name in sources]
    assert sorted(stored) == sorted(expect)  # each entry once, in one table, nothing else
    assert sum(map(len, tables.values())) == len(expect) == report.seen
    if source == "folder":  # and the folder holds nothing the expectations forgot
        containers = {name.split("::")[0] for name in stored}
        assert walked_entries(src) <= set(stored) | containers


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_reader_failing_part_way_records_every_file_of_its_chunk(tmp_path, executor, request):
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        path.write_bytes(hostile.png_bytes(hostile.gradient(seed=i)))
        paths.append(str(path))
    # A path no listing produces: stat raises ValueError, which the reader does not expect.
    paths.insert(2, str(tmp_path / "bad\x00.png"))
    chunk = SourceChunk("folder", str(tmp_path), tuple(paths))
    if executor == "ray":
        request.getfixturevalue("ray_local")
    batches = decode_chunks([chunk], {}, ImageLimits(), executor, RaySettings())
    rows = {row["source"]: row for row in pa.concat_tables(list(batches)).to_pylist()}

    assert sorted(rows) == sorted(paths)  # one row per file of the chunk
    assert [rows[p]["outcome"] for p in paths] == ["ingested"] * 2 + ["quarantined"] * 3
    for path in paths[2:]:  # the failing file and every file after it
        assert rows[path]["reason"] == "chunk_failed" and "ValueError" in rows[path]["detail"]


def test_added_files_land_in_new_shards_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(hostile.png_bytes(hostile.gradient(seed=i)))
    store = ShardStore(str(tmp_path / "data"))
    settings = IngestSettings(executor="local")
    first = ingest_source(str(src), store, settings)
    shards_before = [s.name for s in store.shards("images")]
    (src / "new.png").write_bytes(hostile.png_bytes(hostile.gradient(seed=50)))
    second = ingest_source(str(src), store, settings)
    assert (first.ingested, second.ingested, second.unchanged) == (3, 1, 3)
    assert [s.name for s in store.shards("images")][:1] == shards_before
    assert len(store.shards("images")) == 2
    assert first.fingerprint != second.fingerprint


def test_ray_decodes_only_where_it_adds_parallel_reads(tmp_path, monkeypatch):
    """One chunk is one read task: on a local Ray it is this process's work plus Ray's start-up,
    so it runs here; more chunks, a cluster address (config or RAY_ADDRESS) or nothing set to
    ray otherwise keep their executor. The in-process run still ingests everything."""
    from tasks.ingest import _executor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local_ray, cluster = RaySettings(), RaySettings(address="10.0.0.5:6379")
    assert _executor(IngestSettings(), local_ray, 1) == "local"
    assert _executor(IngestSettings(), local_ray, 2) == "ray"
    assert _executor(IngestSettings(), cluster, 1) == "ray"
    assert _executor(IngestSettings(executor="local"), cluster, 8) == "local"
    assert _executor(IngestSettings(), local_ray, 0) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert _executor(IngestSettings(), local_ray, 1) == "ray"
    monkeypatch.delenv("RAY_ADDRESS")

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(hostile.png_bytes(hostile.gradient(seed=i)))
    report = ingest_source(str(src), ShardStore(str(tmp_path / "data")), IngestSettings(), local_ray)
    assert (report.executor, report.ingested) == ("local", 3)


KILL_SCRIPT = """
import sys
from storage.shards import ShardStore
from tamer.config import IngestSettings
from tasks.ingest import ingest_source
ingest_source(sys.argv[1], ShardStore(sys.argv[2]),
              IngestSettings(executor="local", shard_rows=10, files_per_chunk=10))
"""


def test_sigkilled_writer_leaves_catalog_readable_and_rerun_completes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    total = 400
    for i in range(total):
        (src / f"{i:04d}.png").write_bytes(hostile.png_bytes(hostile.noise(64, seed=i)))
    root = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), str(root)], env=env)
    log = root / "images" / "_delta_log"
    deadline = time.time() + 120
    while time.time() < deadline and writer.poll() is None:
        if len(list(log.glob("*.json"))) >= 3:  # created, then two shards committed
            break
        time.sleep(0.02)
    assert writer.poll() is None, "writer finished before it could be killed; use more files"
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    store = ShardStore(str(root))
    committed = store.row_count("images")
    assert 0 < committed < total
    with connect(store) as con:  # readable, and exactly the committed rows
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == committed

    ingest_source(str(src), store, IngestSettings(executor="local", shard_rows=50))
    ids = store.read("images", columns=["image_id", "source"]).to_pylist()
    assert len(ids) == total
    assert len({row["image_id"] for row in ids}) == total
    assert collections.Counter(row["source"] for row in ids).most_common(1)[0][1] == 1
