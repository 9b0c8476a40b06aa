"""Table store and catalog over every filesystem: Delta commits, keys, versions, fingerprint."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pyarrow as pa
import pytest

from storage.catalog import connect
from storage.shards import ShardStore


def image_rows(n: int, start: int = 0) -> pa.Table:
    now = dt.datetime.now(dt.UTC)
    return pa.Table.from_pylist([
        {"image_id": f"id{i:05d}", "subject": f"s{i % 3}", "class_name": "thing",
         "source": f"/src/{i}.png", "source_kind": "folder", "width": 8 + i, "height": 8,
         "format": "PNG", "mode": "RGB", "num_bytes": 10, "flags": [], "image": b"x",
         "mask": None, "text": None, "meta": None, "ingested_at": now}
        for i in range(start, start + n)
    ])


@pytest.fixture(params=["local", "file-uri", "s3"])
def store(request, tmp_path) -> ShardStore:
    if request.param == "local":
        return ShardStore(str(tmp_path / "root"))
    if request.param == "file-uri":
        return ShardStore(f"file://{tmp_path}/root")
    return ShardStore(request.getfixturevalue("s3_root"))  # a real S3 endpoint (moto)


def test_write_read_and_catalog_on_every_filesystem(store):
    assert store.read("images").num_rows == 0
    with connect(store) as con:  # empty tables still have typed views
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 0
    first = store.write("images", image_rows(5), run_id="r1", metadata={"config": "{}"})
    store.write("images", image_rows(3, start=5))
    assert first.rows == 5 and store.row_count("images") == 8
    assert sorted(store.read("images", ["image_id"]).column(0).to_pylist()) == [
        f"id{i:05d}" for i in range(8)]
    with connect(store) as con:
        per_subject = dict(con.execute(
            "SELECT subject, count(*) FROM images GROUP BY 1").fetchall())
        assert per_subject == {"s0": 3, "s1": 3, "s2": 2}
        assert con.execute("SELECT count(DISTINCT filename) FROM images").fetchone()[0] == 2


def test_empty_write_commits_nothing(store):
    assert store.write("images", image_rows(0)) is None
    assert store.shards("images") == [] and store.version("images") == -1


def test_fingerprint_is_stable_and_tracks_content(store):
    empty = store.fingerprint()
    store.write("images", image_rows(4))
    after_one = store.fingerprint()
    assert after_one != empty
    assert ShardStore(store.location).fingerprint() == after_one  # re-listing changes nothing
    store.write("quarantine", pa.Table.from_pylist([{
        "stage": "ingest", "source": "x", "content_sha256": None, "reason": "empty",
        "detail": "", "quarantined_at": dt.datetime.now(dt.UTC)}]))
    assert store.fingerprint() == after_one  # quarantine is not part of the dataset version
    store.write("images", image_rows(1, start=4))
    assert store.fingerprint() not in (empty, after_one)


def test_keyed_table_stores_each_image_id_once(store):
    first = store.write("images", image_rows(3))
    again = store.write("images", image_rows(2, start=2))
    assert (first.rows, again.rows, again.dropped) == (3, 1, ("id00002",))
    assert sorted(store.read("images", ["image_id"]).column(0).to_pylist()) == [
        f"id{i:05d}" for i in range(4)]
    assert store.write("images", image_rows(2)).rows == 0  # all known: nothing committed
    with pytest.raises(ValueError, match="repeat a image_id"):
        store.write("images", pa.concat_tables([image_rows(1, start=7)] * 2))
    assert store.row_count("images") == 4


def test_keyed_commits_dedupe_in_duckdb_reading_each_file_once(tmp_path, monkeypatch):
    from storage.keys import KeyIndex

    loaded: list[str] = []
    original = KeyIndex._load
    monkeypatch.setattr(KeyIndex, "_load", lambda self, paths: loaded.extend(paths) or
                        original(self, paths))
    monkeypatch.setattr(ShardStore, "_read_file", lambda *args: pytest.fail("keys read in Python"))
    first = ShardStore(str(tmp_path))
    for start in range(0, 8, 2):
        first.write("images", image_rows(2, start=start))
    assert len(loaded) == 3 == len(set(loaded))  # before commits 2, 3, 4: the new file only
    cold = ShardStore(str(tmp_path))  # another process: nothing loaded yet
    result = cold.write("images", image_rows(4, start=6))
    assert (result.rows, result.dropped) == (2, ("id00006", "id00007"))
    assert len(loaded) == 3 + 4  # the cold writer loaded the 4 files of the version once
    assert cold.stored_keys(cold.snapshot("images"), "image_id",
                            pa.array(["id00009", "nope", "id00000"])) == {"id00009", "id00000"}
    old = first.snapshot("images", version=1)  # the version holding only ids 0 and 1
    assert cold.stored_keys(old, "image_id", pa.array(["id00000", "id00003"])) == {"id00000"}


def test_time_travel_reads_an_older_version(tmp_path):
    store = ShardStore(str(tmp_path))
    store.write("images", image_rows(2))
    version = store.version("images")
    store.write("images", image_rows(3, start=2))
    assert store.read("images", version=version).num_rows == 2
    assert store.read("images").num_rows == 5


def test_uncommitted_files_are_invisible(tmp_path):
    store = ShardStore(str(tmp_path))
    store.write("images", image_rows(2))
    # what a writer killed before its commit leaves: a data file the log never named
    (tmp_path / "images" / "part-orphan.parquet").write_bytes(b"PAR1 orphan")
    assert store.row_count("images") == 2
    with connect(store) as con:
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 2


def test_files_are_zstd_with_schema_version_and_run_metadata_in_the_log(tmp_path):
    import pyarrow.parquet as pq

    store = ShardStore(str(tmp_path), row_group_rows=2)
    store.write("images", image_rows(5), run_id="run-7", metadata={"config": '{"a": 1}'})
    parquet = pq.ParquetFile(store.shard_paths("images")[0])
    assert parquet.metadata.num_row_groups == 3
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    info = store.snapshot("images").history(1)[0]
    assert info["tamer.schema_version"] == "1" and info["tamer.run_id"] == "run-7"
    assert info["tamer.config"] == '{"a": 1}'


def test_memory_roots_are_refused_by_name():
    from storage.delta import TablesUnsupported

    store = ShardStore(f"memory://tamer-test-{uuid.uuid4().hex}")
    with pytest.raises(TablesUnsupported, match="memory:// roots cannot hold Delta tables"):
        store.write("images", image_rows(1))


def test_a_shorter_or_missing_committed_file_is_named(tmp_path):
    import pyarrow.parquet as pq

    from storage.shards import BrokenTable

    store = ShardStore(str(tmp_path))
    store.write("images", image_rows(4))
    store.write("images", image_rows(2, start=4))
    first, second = store.shard_paths("images")
    shorter = image_rows(1, start=9).cast(store.read("images").schema)
    os.remove(second)
    with pytest.raises(BrokenTable, match=f"{second}: unreadable committed file"):
        store.read("images")
    pq.write_table(shorter, first)  # valid Parquet, fewer rows than the log recorded
    with pytest.raises(BrokenTable, match=f"{first}: 1 rows, the log recorded 4"):
        store.read("images")


def test_unknown_table_is_rejected(tmp_path):
    with pytest.raises(KeyError, match="unknown table 'imagez'"):
        ShardStore(str(tmp_path)).write("imagez", image_rows(1))


# ---- untrusted source files and images ----------------------------------------------------
@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_images_are_scaled_by_1_over_257_not_stretched(mode):
    import io

    import numpy as np
    from PIL import Image

    from storage.images import decode_image

    # a dim image: source range 15*257 .. 188*257, plus values between the multiples
    values = np.array([[15 * 257, 188 * 257, 100 * 257 + 128, 100 * 257 + 129],
                       [3000, 4000, 40000, 48000]] * 16, dtype=np.int32)
    image = Image.fromarray(values.astype(np.uint16 if mode == "I;16" else np.int32))
    assert image.mode == mode
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if mode == "I;16" else "TIFF")
    stored = np.asarray(Image.open(io.BytesIO(decode_image(buffer.getvalue()).image)))
    assert stored.shape == (32, 4, 3)
    assert (stored[..., 0] == np.rint(values / 257)).all()
    assert stored[0, :2, 0].tolist() == [15, 188]  # not stretched to 0 and 255


@pytest.mark.timeout(60)  # opening a FIFO blocks forever: fail instead of hanging
def test_non_regular_files_are_refused_without_being_opened(tmp_path):
    import socket

    from storage.local_files import Refused, read_regular

    os.mkfifo(tmp_path / "fifo.png")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "socket.png"))
    (tmp_path / "dir").mkdir()
    os.symlink(tmp_path / "dir", tmp_path / "dir-link")
    for name, kind in [("fifo.png", "FIFO"), ("socket.png", "socket"), ("dir-link", "directory")]:
        with pytest.raises(Refused) as refused:
            read_regular(str(tmp_path / name), max_bytes=1024)
        assert refused.value.reason == "not_regular_file" and kind in refused.value.detail


def test_file_size_is_checked_before_reading(tmp_path):
    from storage.local_files import Refused, read_regular

    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:  # 1 TiB, sparse: a read would fail before any check
        handle.truncate(2**40)
    with pytest.raises(Refused) as refused:
        read_regular(str(huge), max_bytes=1024)
    assert refused.value.reason == "too_large" and str(2**40) in refused.value.detail
    (tmp_path / "small.png").write_bytes(b"x" * 1024)
    assert read_regular(str(tmp_path / "small.png"), max_bytes=1024) == b"x" * 1024
    with pytest.raises(Refused, match="too_large"):
        read_regular(str(tmp_path / "small.png"), max_bytes=1023)


def test_s3_options_for_delta_come_from_the_roots_filesystem(monkeypatch):
    import s3fs

    from storage.delta import storage_options
    from storage.fs import Location

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    fs = s3fs.S3FileSystem(endpoint_url="http://127.0.0.1:9", key="k", secret="s",
                           client_kwargs={"region_name": "eu-west-3"}, skip_instance_cache=True)
    options = storage_options(Location(fs=fs, root="bucket/root", uri="s3://bucket/root"))
    assert options == {"AWS_CONDITIONAL_PUT": "etag", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                       "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "k",
                       "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-3"}
    assert storage_options(ShardStore("/tmp").location) == {}
