"""Safe by default: services on loopback, a read-only `tamer sql`, safetensors-only weights."""

from __future__ import annotations

import json

import psutil
import pytest

from sockets import exposed, listeners, tree
from tasks.ray_runtime import host_of, is_loopback


# ---- 1. every service the project starts listens on loopback ------------------------------
@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.0.2.2", False),
    ("::ffff:192.0.2.2", False), ("ray-head.internal", False),
])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


@pytest.mark.parametrize("address, host", [
    ("127.0.0.1:6379", "127.0.0.1"), ("ray://[::1]:10001", "::1"), ("::1", "::1"),
    ("ray://head:10001", "head"), ("auto", "auto"),
])
def test_host_of_a_ray_address(address, host):
    assert host_of(address) == host


def test_local_ray_listens_on_loopback_only(ray_local):
    import ray

    @ray.remote
    def ping() -> int:  # a worker process exists and serves
        return 1

    assert ray.get(ping.remote()) == 1
    assert is_loopback(ray.util.get_node_ip_address())
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    started = tree(psutil.Process())  # this test process and the Ray it started
    names = {name for _, name, _, _ in listeners(started)}
    assert any("gcs_server" in name for name in names) and any("raylet" in name for name in names)
    assert exposed(started) == []


# ---- 2. `tamer sql` only reads -------------------------------------------------------------
WRITES = [
    "COPY (SELECT 1) TO '{outside}/leak.csv'",
    "COPY images TO '{root}/images.csv'",  # inside the root: DuckDB's file rules would allow it
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{root}/leak.csv'",  # ANALYZE runs the statement
    "EXPORT DATABASE '{outside}/export'",
    "IMPORT DATABASE '{outside}/export'",
    "COPY FROM DATABASE memory TO other",
    "ATTACH '{outside}/other.duckdb' AS other",
    "DETACH other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "UPDATE EXTENSIONS",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW images AS SELECT 1 AS x",
    "CREATE MACRO twice(a) AS 2 * a",
    "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
    "INSERT INTO _tamer_catalog_state VALUES ('x')",
    "UPDATE _tamer_catalog_state SET state = 'x'",
    "DELETE FROM _tamer_catalog_state",
    "DROP VIEW images",
    "ALTER VIEW images RENAME TO gone",
    "SET enable_external_access = true",
    "RESET threads",
    "PRAGMA threads = 1",
    "SET VARIABLE x = 1",
    "USE memory",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "PREPARE p AS SELECT 1",
    "SELECT 1; DROP VIEW images",  # every statement is checked, not only the first
]
READS = [  # (statement, the `n` of its last row)
    ("SELECT count(*) AS n FROM images", 4),
    ("FROM images SELECT count(*) AS n", 4),
    ("WITH s AS (SELECT * FROM images) SELECT count(*) AS n FROM s", 4),
    ("SELECT count(*) AS n FROM (DESCRIBE images) WHERE column_name = 'image_id'", 1),
    ("SELECT count AS n FROM (SUMMARIZE images) WHERE column_name = 'image_id'", 4),
    ("SELECT count(*) AS n FROM (SHOW TABLES) WHERE name = 'images'", 1),
    ("SELECT 1 AS n; SELECT count(*) AS n FROM images", 4),
]


@pytest.fixture(params=["local", "memory"])
def catalog_root(request, tmp_path) -> str:
    """A dataset root holding 4 committed images (a local folder or an object-store stand-in)."""
    import uuid

    from storage.shards import ShardStore
    from test_storage import image_rows

    root = str(tmp_path / "root") if request.param == "local" else f"memory://sec-{uuid.uuid4().hex}"
    ShardStore(root).write("images", image_rows(4))
    return root


def tamer(*args: str):
    from typer.testing import CliRunner

    from tamer.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize("statement", WRITES)
def test_sql_refuses_statements_that_write(tmp_path, statement):
    from storage.shards import ShardStore
    from test_storage import image_rows

    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    ShardStore(str(root)).write("images", image_rows(4))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = tamer("--root", str(root), "sql", statement.format(root=root, outside=outside))
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("refused: tamer sql only reads") and "\n" not in message
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    counted = tamer("--root", str(root), "sql", "SELECT count(*) AS n FROM images", "--json")
    assert json.loads(counted.stdout) == [{"n": 4}]  # the views are intact


@pytest.mark.parametrize("statement, n", READS)
def test_sql_reads_the_views_on_every_root(catalog_root, statement, n):
    result = tamer("--root", catalog_root, "sql", statement, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[-1]["n"] == n


def test_sql_explain_of_a_select_is_a_read(catalog_root):
    result = tamer("--root", catalog_root, "sql", "EXPLAIN SELECT count(*) FROM images", "--json")
    assert result.exit_code == 0 and "explain_value" in json.loads(result.stdout)[0]


def test_read_only_connection_holds_even_without_the_statement_check(catalog_root, tmp_path):
    """Defence in depth: DuckDB itself refuses files outside the root and config changes."""
    import duckdb

    from storage.catalog import connect
    from storage.shards import ShardStore

    (tmp_path / "secret.txt").write_text("s3cr3t\n")
    with connect(ShardStore(catalog_root), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 4  # views still read
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_csv('{tmp_path}/secret.txt')")
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"COPY (SELECT 1) TO '{tmp_path}/leak.csv'")
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute("SET enable_external_access = true")
        if not catalog_root.startswith("memory://"):
            with pytest.raises(duckdb.Error, match="read-only"):
                con.execute("CREATE TABLE t AS SELECT 1")
    assert not (tmp_path / "leak.csv").exists()
