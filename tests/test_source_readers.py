"""One reader class per source format behind one registry: listing routes every file to its
reader, and a new format is one class plus one registry entry."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from storage.sources import READERS, RawItem, Rejected, SourceChunk, SourceReader, list_chunks, read_chunk


def _png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _source(tmp_path):
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "a.png").write_bytes(_png("red"))
    (tmp_path / "dog" / "a.txt").write_text("a red square")
    (tmp_path / "dog" / "a.mask.png").write_bytes(_png("white"))
    with tarfile.open(tmp_path / "shard.tar", "w") as tar:
        for name, data in (("cat/b.png", _png("blue")), ("cat/b.txt", b"blue")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"image": [_png("green")], "subject": ["frog"]}), tmp_path / "rows.parquet")
    return tmp_path


def test_every_format_goes_to_its_reader_in_registry_order(tmp_path):
    root = _source(tmp_path)
    chunks = list_chunks(str(root))
    assert [c.kind for c in chunks] == list(READERS)  # folder files, then tars, then Parquet
    items = {c.kind: list(read_chunk(c, max_bytes=1 << 20)) for c in chunks}
    assert [(i.subject, i.text, i.mask is not None) for i in items["folder"]] == [("dog", "a red square", True)]
    assert [(i.subject, i.text) for i in items["tar"]] == [("cat", "blue")]
    assert [i.subject for i in items["parquet"]] == ["frog"]
    assert [c.kind for c in list_chunks(str(root / "shard.tar"))] == ["tar"]  # one file: its reader


def test_a_new_format_is_one_reader_and_one_registry_entry(tmp_path, monkeypatch):
    class ZipReader(SourceReader):
        kind, suffixes = "zip", (".zip",)

        @staticmethod
        def read(chunk: SourceChunk, max_bytes: int) -> Iterator[RawItem | Rejected]:
            with zipfile.ZipFile(chunk.paths[0]) as archive:
                for info in archive.infolist():
                    if info.file_size > max_bytes:
                        yield Rejected(info.filename, "too_large", f"{info.file_size} bytes")
                    else:
                        yield RawItem(f"{chunk.paths[0]}::{info.filename}", archive.read(info),
                                      subject=info.filename.split("/")[0])

    root = _source(tmp_path)
    with zipfile.ZipFile(root / "more.zip", "w") as archive:
        archive.writestr("owl/c.png", _png("black"))
        archive.writestr("owl/big.png", b"x" * 100)
    before = list_chunks(str(root))
    assert str(root / "more.zip") in before[0].paths  # unknown to the registry: a loose file

    monkeypatch.setitem(READERS, "zip", ZipReader)
    chunks = list_chunks(str(root))
    assert [c.kind for c in chunks] == ["folder", "tar", "parquet", "zip"]
    assert all(str(root / "more.zip") not in c.paths for c in chunks if c.kind == "folder")
    read = list(read_chunk(chunks[-1], max_bytes=99))
    assert [(type(i).__name__, i.source.rsplit("::", 1)[-1]) for i in read] == [
        ("RawItem", "owl/c.png"), ("Rejected", "owl/big.png")]
    assert read[0].subject == "owl"
