"""Shard store and catalog over every filesystem: atomic commit, manifest, fingerprint."""

from __future__ import annotations

import datetime as dt
import json
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


@pytest.fixture(params=["local", "file-uri", "memory"])
def store(request, tmp_path) -> ShardStore:
    if request.param == "local":
        return ShardStore(str(tmp_path / "root"))
    if request.param == "file-uri":
        return ShardStore(f"file://{tmp_path}/root")
    return ShardStore(f"memory://tamer-test-{uuid.uuid4().hex}")  # an object-store stand-in


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
    assert store.shards("images") == []


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


def test_staged_and_unlisted_shards_are_invisible(tmp_path):
    store = ShardStore(str(tmp_path))
    store.write("images", image_rows(2))
    # what a writer killed before its commit leaves: a staged file and an unlisted shard
    (tmp_path / "images" / "_staging").mkdir(exist_ok=True)
    (tmp_path / "images" / "_staging" / "part-partial.parquet").write_bytes(b"PAR1 partial")
    (tmp_path / "images" / "part-orphan.parquet").write_bytes(b"PAR1 orphan")
    assert store.row_count("images") == 2
    with connect(store) as con:
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 2
    manifest = json.loads((tmp_path / "images" / "_manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [2]


def test_shards_are_zstd_with_schema_version_and_run_metadata(tmp_path):
    import pyarrow.parquet as pq

    store = ShardStore(str(tmp_path), row_group_rows=2)
    store.write("images", image_rows(5), run_id="run-7", metadata={"config": '{"a": 1}'})
    parquet = pq.ParquetFile(store.shard_paths("images")[0])
    meta = parquet.schema_arrow.metadata
    assert meta[b"tamer.schema_version"] == b"1" and meta[b"tamer.run_id"] == b"run-7"
    assert meta[b"tamer.config"] == b'{"a": 1}'
    assert parquet.metadata.num_row_groups == 3
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"


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
