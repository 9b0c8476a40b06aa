"""Delta tables from the command line: old roots refused then migrated, copied and moved roots,
verify naming broken files, maintain compacting and vacuuming without losing a row."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from storage.catalog import connect
from storage.schemas import schema_for
from storage.shards import LegacyRoot, ShardStore
from test_storage import image_rows


def tamer(*args: str):
    from tamer.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def one_line(text: str) -> str:
    return " ".join(text.split())


def write_legacy_table(root, table: str, shards: list[pa.Table]) -> None:
    """A table as the older `_manifest.json` store left it."""
    folder = root / table
    (folder / "_staging").mkdir(parents=True)
    (folder / "_staging" / "part-partial.parquet").write_bytes(b"PAR1 partial")
    entries = []
    for i, shard in enumerate(shards):
        name = f"part-20260101T00000{i}-{i:012d}.parquet"
        pq.write_table(shard.cast(schema_for(table)), folder / name)
        entries.append({"name": name, "rows": shard.num_rows, "num_bytes": 0, "sha256": "",
                        "committed_at": "2026-01-01T00:00:00+00:00", "run_id": None})
    (folder / "_manifest.json").write_text(json.dumps({"table": table, "shards": entries}))


def test_old_manifest_roots_are_refused_then_migrated(tmp_path):
    root = tmp_path / "root"
    repeated = image_rows(1, start=2).set_column(3, "source", pa.array(["/elsewhere/2.png"]))
    write_legacy_table(root, "images", [image_rows(3), pa.concat_tables([image_rows(2, start=3),
                                                                          repeated])])
    write_legacy_table(root, "duplicates", [pa.Table.from_pylist([{
        "image_id": "id00001", "source": "/copy/1.png", "kept_source": "/src/1.png",
        "seen_at": dt.datetime.now(dt.UTC)}])])
    with pytest.raises(LegacyRoot, match="run `tamer migrate"):
        ShardStore(str(root)).read("images")
    refused = tamer("--root", str(root), "sql", "SELECT count(*) FROM images")
    assert refused.exit_code == 1 and "tamer migrate" in one_line(refused.stderr)
    assert len(refused.stderr.strip().splitlines()) <= 2 and "Traceback" not in refused.output

    migrated = tamer("--root", str(root), "migrate", "--json")
    assert migrated.exit_code == 0, migrated.output
    assert json.loads(migrated.stdout) == {"duplicates": 1, "images": 5}
    store = ShardStore(str(root))
    assert sorted(store.read("images", ["image_id"]).column(0).to_pylist()) == [
        f"id{i:05d}" for i in range(5)]
    moved_aside = {(r["source"], r["kept_source"]) for r in store.read("duplicates").to_pylist()}
    assert moved_aside == {("/copy/1.png", "/src/1.png"), ("/elsewhere/2.png", "/src/2.png")}
    assert sorted(os.listdir(root / "images")) == ["_delta_log"] + [
        info.name for info in store.shards("images")]  # old shards and leftovers are gone
    again = tamer("--root", str(root), "migrate", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == {}


def test_catalog_follows_a_copied_and_a_moved_root(tmp_path):
    original = tmp_path / "original"
    ShardStore(str(original)).write("images", image_rows(4))
    with connect(ShardStore(str(original))) as con:  # the catalog file now exists in the root
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 4

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    ShardStore(str(copy)).write("images", image_rows(2, start=4))  # the copy diverges
    for root, rows in ((original, 4), (copy, 6)):
        with connect(ShardStore(str(root))) as con:
            assert con.execute("SELECT count(*) FROM images").fetchone()[0] == rows
            files = {row[0] for row in con.execute("SELECT DISTINCT filename FROM images").fetchall()}
            assert all(name.startswith(f"{root}/") for name in files), files

    moved = tmp_path / "moved"
    original.rename(moved)
    result = tamer("--root", str(moved), "sql", "SELECT count(*) AS n FROM images", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"n": 4}]


def test_catalog_rebuilds_the_views_of_the_tables_that_changed_only(tmp_path, monkeypatch):
    """Every stage refreshes the catalog; rebuilding all its views cost an incremental run's
    ingest a third of its time. A commit to one table rebuilds that table's view."""
    from storage import catalog

    store = ShardStore(str(tmp_path / "root"))
    store.write("images", image_rows(4))
    connect(store).close()
    rebuilt: list[str] = []
    original = catalog.create_view
    monkeypatch.setattr(catalog, "create_view",
                        lambda con, store, table, *rest, **options: rebuilt.append(table) or
                        original(con, store, table, *rest, **options))
    connect(store).close()
    assert rebuilt == []
    store.write("images", image_rows(2, start=4))
    with connect(store) as con:
        assert rebuilt == ["images"]
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM captions").fetchone()[0] == 0  # kept, still typed


def test_a_catalog_from_before_per_table_state_has_all_its_views_rebuilt(tmp_path):
    import duckdb

    from storage.catalog import CATALOG_FILE, STATE_TABLE

    store = ShardStore(str(tmp_path / "root"))
    store.write("images", image_rows(4))
    connect(store).close()
    with duckdb.connect(str(tmp_path / "root" / CATALOG_FILE)) as old:  # the earlier layout
        old.execute(f"CREATE OR REPLACE TABLE {STATE_TABLE} (state VARCHAR)")
        old.execute(f"INSERT INTO {STATE_TABLE} VALUES ('digest of every table')")
        old.execute("DROP VIEW images")
    with connect(store) as con:
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 4


def test_verify_names_a_deleted_and_a_truncated_file_and_queries_name_it_too(tmp_path):
    root = tmp_path / "root"
    store = ShardStore(str(root))
    store.write("images", image_rows(3))
    store.write("images", image_rows(2, start=3))
    assert tamer("--root", str(root), "verify").exit_code == 0
    first, second = store.shard_paths("images")
    with open(first, "r+b") as handle:
        handle.truncate(100)
    os.remove(second)

    result = tamer("--root", str(root), "verify", "--json")
    assert result.exit_code == 1
    found = {row["path"]: row["problem"] for row in json.loads(result.stdout)}
    assert found == {first: "size", second: "missing"}
    query = tamer("--root", str(root), "sql", "SELECT count(*) FROM images")
    assert query.exit_code == 1 and "Traceback" not in query.output
    assert len(query.stderr.strip().splitlines()) == 1
    assert any(path in one_line(query.stderr) for path in (first, second))


def test_maintain_compacts_vacuums_leftovers_and_keeps_every_row(tmp_path):
    root = tmp_path / "root"
    store = ShardStore(str(root))
    for start in range(0, 10, 2):
        store.write("images", image_rows(2, start=start))
    orphan = root / "images" / "part-killed-writer.parquet"
    orphan.write_bytes(b"PAR1 never committed")
    os.utime(orphan, (0, 0))  # older than any retention
    kept = root / "images" / "part-in-flight.parquet"
    kept.write_bytes(b"PAR1 a writer is still busy")  # younger than the retention: kept

    result = tamer("--root", str(root), "maintain", "--retention-hours", "1", "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["images"]
    assert counts["files_removed_by_compaction"] == 5 and counts["files_added_by_compaction"] == 1
    assert not orphan.exists() and kept.exists()
    assert len(store.shards("images")) == 1
    assert sorted(store.read("images", ["image_id"]).column(0).to_pylist()) == [
        f"id{i:05d}" for i in range(10)]
    assert tamer("--root", str(root), "verify").exit_code == 0


def test_maintain_never_vacuums_a_version_a_training_run_pinned(tmp_path):
    from tasks.runs import record_versions

    store = ShardStore(str(tmp_path / "root"))
    for start in range(0, 6, 2):
        store.write("images", image_rows(2, start=start))
    pinned = store.version("images")
    record_versions(store, "run-1", {"images": pinned})
    store.write("images", image_rows(2, start=6))
    result = tamer("--root", str(tmp_path / "root"), "maintain", "--retention-hours", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"]["retention_hours"] >= 1
    # the run's version still reads whole after compaction + a zero-hour vacuum
    assert store.read("images", ["image_id"], version=pinned).num_rows == 6
    assert store.row_count("images") == 8


KEEP_WRITING = """
import sys
sys.path.insert(0, sys.argv[2])
from storage.shards import ShardStore
from test_storage import image_rows
store = ShardStore(sys.argv[1])
for n in range(100_000):
    store.write("images", image_rows(5, start=5 * n))
"""


def test_a_writer_killed_mid_commit_leaves_the_table_at_its_last_version(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from storage.delta_maintain import verify

    root, tests = tmp_path / "root", Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": str(tests.parent)}
    writer = subprocess.Popen([sys.executable, "-c", KEEP_WRITING, str(root), str(tests)], env=env)
    log = root / "images" / "_delta_log"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(log.glob("*.json"))) < 6:
        time.sleep(0.005)
    writer.send_signal(signal.SIGKILL)  # commits follow each other back to back: mid-commit
    writer.wait()
    store = ShardStore(str(root))
    version = store.version("images")
    assert version >= 5
    assert store.row_count("images") == store.read("images").num_rows == 5 * version
    assert verify(store) == []
    assert store.write("images", image_rows(5, start=10**6)).rows == 5
    assert store.version("images") == version + 1


def test_a_column_added_to_a_schema_widens_the_table_and_old_rows_read_null(tmp_path, monkeypatch):
    """The schemas module may add nullable columns (e.g. eval_results' oracle accuracies): the
    next commit widens the Delta table, files written before read the column as null, and the
    catalog view shows both."""
    from storage import schemas

    store = ShardStore(str(tmp_path / "root"))
    store.write("images", image_rows(2))
    wider = schemas.IMAGES.append(pa.field("sharpness", pa.float64()))
    monkeypatch.setitem(schemas.TABLES, "images", wider)
    store.write("images", image_rows(2, start=2).append_column("sharpness", pa.array([0.5, 0.25])))
    table = store.read("images", ["image_id", "sharpness"]).sort_by("image_id")
    assert table.column("sharpness").to_pylist() == [None, None, 0.5, 0.25]
    with connect(store) as con:
        assert con.execute("SELECT count(*), count(sharpness) FROM images").fetchone() == (4, 2)
    # a writer that predates the column still commits (the column null); a required one is refused
    store.write("images", image_rows(1, start=4))
    assert store.read("images", ["sharpness"]).column("sharpness").null_count == 3
    with pytest.raises(KeyError, match="'width'"):
        store.write("images", image_rows(1, start=5).drop_columns(["width"]))
    assert store.row_count("images") == 5
