"""Committed `images` rows as a Ray dataset, limited to the ids a stage still has to do.

Shared by the stages that run a model over images (caption, embed). The driver decides which
ids are to do (`storage.queries.images_left`: images file -> its ids to do, files with none
omitted, so an up-to-date table reads no bytes); `read_images` reads just the requested
columns of those files on Ray and drops done rows;
workers turn the stored bytes into PIL images with `decode_image`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from storage.images import to_rgb
from storage.shards import ShardStore

READ_CPUS = 0.25  # per read/filter task: small, so model actors can hold the rest of the CPUs


def keep_ids(batch: pa.Table, ids: pa.Array) -> pa.Table:
    """Rows of `batch` whose image_id is in `ids`."""
    return batch.filter(pc.is_in(batch.column("image_id"), value_set=ids))


def read_images(store: ShardStore, todo: dict[str, list[str]], columns: list[str],
                block_rows: int):
    """A Ray dataset of the `columns` of every to-do row (`todo`: `ImagesLeft.files`).

    Blocks hold at most `block_rows` rows (use the model batch size): a shard is one block
    when read, and an actor pool hands out whole blocks, so without this one actor would get
    a whole shard while the others idle.
    """
    import ray
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    location = store.location
    filesystem = None if location.is_local else PyFileSystem(FSSpecHandler(location.fs))
    ids = pa.array(sorted({image_id for ids in todo.values() for image_id in ids}), pa.string())
    dataset = ray.data.read_parquet(sorted(todo), filesystem=filesystem,
                                    columns=sorted({"image_id", *columns}),
                                    ray_remote_args={"num_cpus": READ_CPUS})
    dataset = dataset.map_batches(keep_ids, fn_kwargs={"ids": ids}, batch_format="pyarrow",
                                  batch_size=None, num_cpus=READ_CPUS)
    return dataset.repartition(target_num_rows_per_block=block_rows)


def iter_images_local(store: ShardStore, todo: dict[str, list[str]], columns: list[str],
                      batch_size: int) -> Iterator[pa.Table]:
    """The same rows as `read_images`, serially in this process, `batch_size` rows at a time."""
    for path, ids in todo.items():
        with store.fs.open(path, "rb") as handle:
            table = pq.read_table(handle, columns=sorted({"image_id", *columns}))
        table = keep_ids(table, pa.array(ids, pa.string()))
        for start in range(0, table.num_rows, batch_size):
            yield table.slice(start, batch_size)


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Stored bytes -> fully decoded RGB image; raises for bytes that do not decode.

    With `min_side`, JPEGs decode directly at a reduced scale (DCT scaling) that keeps both
    sides >= min_side: models resize to a few hundred pixels anyway, and a full-size decode of
    a photo costs more than the model's preprocessing of it.
    """
    image = Image.open(io.BytesIO(data))
    if min_side and image.format == "JPEG":
        image.draft("RGB", (min_side, min_side))
    image.load()
    return to_rgb(image)
