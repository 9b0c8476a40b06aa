"""Builds a source folder of valid and hostile inputs; returns what each should become.

Ingest it with `IngestSettings(max_bytes=MAX_BYTES)`: some entries exist to exceed it.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

MAX_BYTES = 100_000  # every valid input is smaller; the oversized ones are larger

def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=params.pop("format", "PNG"), **params)
    return buffer.getvalue()


def gradient(size=(48, 40), mode="RGB", seed=0) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata([((x * 5 + seed) % 256, (y * 7) % 256, (x * y + seed * 13) % 256)
                   for y in range(size[1]) for x in range(size[0])])
    return image.convert(mode) if mode != "RGB" else image


def noise(size: int, seed: int) -> Image.Image:
    """A distinct random RGB image per seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid PNG header claiming a huge canvas, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def rotated_jpeg() -> bytes:
    """A 60x30 JPEG whose EXIF says "rotate 90": upright it is 30x60."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return png_bytes(gradient((60, 30)), format="JPEG", exif=exif.tobytes())


def build(root: Path) -> dict[str, dict]:
    """Write the hostile source under root/src; returns expectations keyed by file name."""
    src = root / "src"
    (src / "subject_a").mkdir(parents=True)
    (src / "flat").mkdir()
    (src / "subject_b").mkdir()
    outside = root / "outside.png"
    outside.write_bytes(png_bytes(gradient(seed=99)))
    expect: dict[str, dict] = {}

    def put(rel: str, data: bytes, **expected) -> None:
        path = src / rel
        path.write_bytes(data)
        expect[rel] = expected

    valid = png_bytes(gradient(seed=1))
    put("subject_a/00.png", valid, outcome="ingested", mode="RGB")
    put("subject_a/01.jpg", png_bytes(gradient(seed=2), format="JPEG"), outcome="ingested")
    put("subject_a/02.png", png_bytes(gradient(mode="RGBA", seed=3)), outcome="ingested",
        mode="RGBA")
    put("subject_a/03.jpg", png_bytes(gradient(mode="CMYK", seed=4), format="JPEG"),
        outcome="ingested", mode="CMYK")
    palette = gradient(seed=5).convert("P")
    put("flat/palette.gif", png_bytes(palette, format="GIF", transparency=0),
        outcome="ingested", mode="P")
    put("flat/gray16.png", png_bytes(Image.new("I;16", (40, 40), 3000)), outcome="ingested",
        pixel=(12, 12, 12))  # round(3000 / 257): scaled, not stretched
    put("flat/gray.png", png_bytes(gradient(mode="L", seed=6)), outcome="ingested", mode="L")
    put("flat/rotated.jpg", rotated_jpeg(), outcome="ingested", size=(30, 60))
    put("flat/tiny.png", png_bytes(gradient((8, 8), seed=7)), outcome="ingested", flag="tiny")
    put("subject_b/copy_of_00.png", valid, outcome="duplicate")  # listed after subject_a
    whole = png_bytes(gradient((64, 64), seed=8), format="JPEG")
    put("flat/truncated.jpg", whole[: len(whole) * 2 // 3],
        outcome="quarantined", reason="truncated")
    put("flat/empty.png", b"", outcome="quarantined", reason="empty")
    put("flat/notes.jpg", b"this is not an image at all\n" * 10, outcome="quarantined",
        reason="not_an_image")
    put("flat/icon.ico", png_bytes(gradient((32, 32), seed=9), format="ICO"),
        outcome="quarantined", reason="unsupported_format")
    put("flat/bomb.png", bomb_png(), outcome="quarantined", reason="decompression_bomb")
    os.symlink(outside, src / "flat" / "escape.png")
    expect["flat/escape.png"] = {"outcome": "quarantined", "reason": "link_outside_root"}
    put("subject_a/04.png", png_bytes(gradient(seed=10)), outcome="ingested", subject="subject_a")
    (src / "subject_a" / "04.json").write_text(json.dumps({"subject": 5, "class_name": ["x"]}))
    put("flat/big.png", png_bytes(noise(200, seed=11)), outcome="quarantined", reason="too_large")
    with open(src / "flat" / "huge.png", "wb") as handle:  # 1 TiB, sparse: reading it would fail
        handle.truncate(2**40)
    expect["flat/huge.png"] = {"outcome": "quarantined", "reason": "too_large"}
    _write_specials(root, src, expect)
    (src / "README.md").write_text("documentation is not an image and is not quarantined")
    _write_tar(src / "shard-000.tar", outside, expect)
    _write_parquet(src / "table.parquet", expect)
    return expect


def _write_specials(root: Path, src: Path, expect: dict[str, dict]) -> None:
    """Entries that are not regular files: opening a FIFO blocks forever, so none is opened."""
    special = {"outcome": "quarantined", "reason": "not_regular_file"}
    os.mkfifo(src / "flat" / "fifo.png")
    os.mkfifo(src / "flat" / "queue.parquet")
    os.mkfifo(src / "flat" / "pipe.tar")
    with socket.socket(socket.AF_UNIX) as server:  # the socket file outlives the socket
        server.bind(str(src / "flat" / "socket.png"))
    os.symlink(src / "subject_a", src / "alias")  # a directory link inside the root
    (root / "outside_dir").mkdir()
    (root / "outside_dir" / "00.png").write_bytes(png_bytes(gradient(seed=98)))
    os.symlink(root / "outside_dir", src / "flat" / "elsewhere")
    for name in ("flat/fifo.png", "flat/queue.parquet", "flat/pipe.tar", "flat/socket.png",
                 "alias"):
        expect[name] = special
    expect["flat/elsewhere"] = {"outcome": "quarantined", "reason": "link_outside_root"}


def _write_tar(path: Path, outside: Path, expect: dict[str, dict]) -> None:
    def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as archive:
        add(archive, "subject_t/000.png", png_bytes(gradient(seed=20)))
        add(archive, "subject_t/000.txt", b"a caption shipped in the tar")
        add(archive, "subject_t/001.jpg", png_bytes(gradient(seed=21), format="JPEG"))
        add(archive, "../evil.png", png_bytes(gradient(seed=22)))
        add(archive, "/abs/evil.png", png_bytes(gradient(seed=23)))
        link = tarfile.TarInfo("subject_t/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        archive.addfile(link)
        fifo = tarfile.TarInfo("subject_t/fifo.png")
        fifo.type = tarfile.FIFOTYPE
        archive.addfile(fifo)
        add(archive, "subject_t/002.png", png_bytes(noise(200, seed=24)))  # over MAX_BYTES
        add(archive, "subject_t/002.txt", b"the caption of an oversized image")
        add(archive, "subject_t/003.png", b"\x89PNG not really")
        add(archive, "subject_t/004.bin", b"a sample without an image")
        add(archive, "subject_t/005.png", png_bytes(gradient(seed=1)))  # subject_a/00.png's bytes
        add(archive, "subject_t/006.png", png_bytes(gradient(seed=25)))
        add(archive, "subject_t/006.webp", png_bytes(gradient(seed=26), format="WEBP"))
    tar = path.name
    expect[f"{tar}::subject_t/000.png"] = {"outcome": "ingested", "text": True}
    expect[f"{tar}::subject_t/001.jpg"] = {"outcome": "ingested"}
    for member in ("../evil.png", "/abs/evil.png", "subject_t/link.png", "subject_t/fifo.png"):
        expect[f"{tar}::{member}"] = {"outcome": "quarantined", "reason": "unsafe_tar_member"}
    expect[f"{tar}::subject_t/002.png"] = {"outcome": "quarantined", "reason": "too_large"}
    expect[f"{tar}::subject_t/003.png"] = {"outcome": "quarantined", "reason": "not_an_image"}
    expect[f"{tar}::subject_t/004"] = {"outcome": "quarantined", "reason": "no_image"}
    expect[f"{tar}::subject_t/005.png"] = {"outcome": "duplicate"}
    expect[f"{tar}::subject_t/006.png"] = {"outcome": "ingested"}  # one image per sample:
    expect[f"{tar}::subject_t/006.webp"] = {"outcome": "quarantined", "reason": "extra_image"}


def _write_parquet(path: Path, expect: dict[str, dict]) -> None:
    def row(image=None, image_path=None, caption=None, meta=None) -> dict:
        return {"image": image, "image_path": image_path, "caption": caption, "meta": meta}

    rows = [
        row(png_bytes(gradient(seed=30)), caption="from bytes"),
        row(image_path="subject_a/00.png"),  # a duplicate
        row(image_path="../outside.png"),
        row(image_path="flat/fifo.png"),
        row(image_path="flat/\x00.png"),
        row(png_bytes(gradient(seed=31)), meta=7),
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    expect[f"{path.name}::0"] = {"outcome": "ingested", "text": True}
    expect[f"{path.name}::1"] = {"outcome": "duplicate"}  # the bytes of subject_a/00.png
    expect[f"{path.name}::2"] = {"outcome": "quarantined", "reason": "path_outside_root"}
    expect[f"{path.name}::3"] = {"outcome": "quarantined", "reason": "not_regular_file"}
    expect[f"{path.name}::4"] = {"outcome": "quarantined", "reason": "bad_row"}
    expect[f"{path.name}::5"] = {"outcome": "ingested"}  # a non-JSON meta is ignored
    strings = path.with_name("strings.parquet")  # an image column of text, not bytes
    pq.write_table(pa.table({"image": ["subject_a/00.png"]}), strings)
    expect[f"{strings.name}::0"] = {"outcome": "quarantined", "reason": "bad_row"}
