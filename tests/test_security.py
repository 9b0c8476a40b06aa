"""Safe by default: services on loopback, a read-only `tamer sql`, safetensors-only weights."""

from __future__ import annotations

import json
from pathlib import Path

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


@pytest.fixture(params=["local", "s3"])
def catalog_root(request, tmp_path) -> str:
    """A dataset root holding 4 committed images (a local folder or a local S3 endpoint)."""
    from storage.shards import ShardStore
    from test_storage import image_rows

    root = str(tmp_path / "root") if request.param == "local" else request.getfixturevalue("s3_root")
    ShardStore(root).write("images", image_rows(4))
    return root


def tamer(*args: str):
    from typer.testing import CliRunner

    from tamer.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def one_line(stderr: str) -> str:
    """The error message, unwrapped: rich folds a long line at the console width."""
    return " ".join(stderr.split())


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
    assert one_line(result.stderr).startswith("refused: tamer sql only reads; ")
    assert result.stderr.count("refused") == 1 and "Traceback" not in result.output
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
        if not catalog_root.startswith("s3://"):
            with pytest.raises(duckdb.Error, match="read-only"):
                con.execute("CREATE TABLE t AS SELECT 1")
    assert not (tmp_path / "leak.csv").exists()


# ---- 3. weights load from safetensors only ------------------------------------------------
class Payload:
    """What a hostile pickle does when loaded: here, create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def hostile_pickle(path: Path, marker: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": Payload(marker)}, path)
    return path


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> Path:
    from model_fixtures import tiny_model

    path = tmp_path_factory.mktemp("pipeline")
    tiny_model().save_pretrained(path)
    return path


def test_hostile_pickle_really_runs_code_when_unpickled(tmp_path):
    """The fixture is a real threat: plain torch.load executes it."""
    import torch

    marker = tmp_path / "pwned"
    torch.load(hostile_pickle(tmp_path / "w.bin", marker), weights_only=False)
    assert marker.exists()


def test_saved_pipeline_loads(saved_pipeline):
    from model.pipeline import ADAPTER_FILE, TamerPipeline

    pipe = TamerPipeline.from_pretrained(saved_pipeline)
    assert isinstance(pipe, TamerPipeline) and (saved_pipeline / ADAPTER_FILE).exists()
    assert list(saved_pipeline.rglob("*.safetensors")) and not list(saved_pipeline.rglob("*.bin"))


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "model.ckpt"])
def test_folder_with_only_pickle_weights_is_refused(tmp_path, weights):
    from model.pipeline import PickleWeightsRefused, TamerPipeline

    folder, marker = tmp_path / "pickled", tmp_path / "pwned"
    hostile_pickle(folder / weights, marker)
    with pytest.raises(PickleWeightsRefused, match=f"refused to load {folder}: .*{weights}"):
        TamerPipeline.from_pretrained(folder)
    assert not marker.exists()


def test_code_shipped_in_a_pipeline_folder_never_runs(saved_pipeline, tmp_path):
    """model_index.json may name a .py beside it; loading must not import it, even if asked to."""
    import shutil

    from model.pipeline import TamerPipeline

    folder, marker = tmp_path / "custom", tmp_path / "pwned"
    shutil.copytree(saved_pipeline, folder)
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                    "from model.pipeline import TamerPipeline as Evil\n")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": ["evil", "Evil"]}))
    with pytest.raises(ValueError, match="custom code"):
        TamerPipeline.from_pretrained(folder, trust_remote_code=True)
    assert not marker.exists()


@pytest.fixture
def swapped_unet(saved_pipeline, tmp_path) -> tuple[Path, Path]:
    """The saved pipeline with its UNet's safetensors swapped for a hostile pickle."""
    import shutil

    folder, marker = tmp_path / "swapped", tmp_path / "pwned"
    shutil.copytree(saved_pipeline, folder)
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    hostile_pickle(folder / "unet" / "diffusion_pytorch_model.bin", marker)
    return folder, marker


def test_a_component_with_only_pickle_weights_is_refused(swapped_unet):
    from model.pipeline import PickleWeightsRefused, TamerPipeline

    folder, marker = swapped_unet
    with pytest.raises(PickleWeightsRefused, match=f"refused to load {folder / 'unet'}: "):
        TamerPipeline.from_pretrained(folder)
    assert not marker.exists()


def test_generate_refuses_a_pickled_checkpoint_with_one_line(swapped_unet, tmp_path):
    from PIL import Image

    folder, marker = swapped_unet
    image = tmp_path / "ref.png"
    Image.new("RGB", (32, 32), "red").save(image)
    result = tamer("generate", "--checkpoint", str(folder), "--image", str(image), "--prompt", "a {}",
                   "--out", str(tmp_path / "out"), "--n", "1", "--steps", "1")
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith(f"refused to load {folder / 'unet'}: it holds only pickle")
    assert result.stderr.count("refused") == 1 and "Traceback" not in result.output
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_eval_pipeline_loader_refuses_a_pickled_pipeline(swapped_unet, tmp_path):
    from model.pipeline import PickleWeightsRefused
    from model.profiles import load_profile
    from tasks.methods import Context, Ours, Sampling

    folder, marker = swapped_unet
    with pytest.raises(PickleWeightsRefused):
        Ours(Context(load_profile("tiny"), Sampling(1, 1.0, 1.0, "default"), tmp_path, str(folder)), Ours.settings())
    assert not marker.exists()
