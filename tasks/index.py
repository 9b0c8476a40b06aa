"""clip-retrieval export, kNN index build, the loopback `back` service and queries.

1. `export_clip_retrieval` writes the current vectors in clip-retrieval's layout under
   `<root>/clip_export/` (rebuilt only when its inputs' fingerprint changed).
2. `build_index` builds clip-retrieval's index folder (`image.index`, `text.index`, `metadata/`)
   with autofaiss into `<root>/indexes/<fp>/` and records it in the `indexes` table; an index
   for the same fingerprint is never rebuilt.
3. `serve` runs clip-retrieval's `back` on 127.0.0.1 only; `served` does it in a subprocess.
4. `search_service` (ClipClient) and `search_direct` (faiss, no service) return `Hit`s;
   `search` picks the service when it answers, else the file.

Text vectors are row-aligned with the metadata like the image vectors, because the back maps
both indexes through one metadata table; images without a caption get a zero text vector,
which scores 0 against every query.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import glob
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from model.embedding import model_id as clip_model_id
from model.profiles import load_profile, resolve
from storage import queries
from storage.queries import latest_captions
from storage.schemas import TABLES
from storage.shards import ShardStore
from tamer.config import EmbedSettings
from tasks.embed import IMAGE, TEXT, current_vectors

EXPORT_DIR = "clip_export"
INDEX_DIR = "indexes"
INDICE_NAME = "tamer"
LOOPBACK = "127.0.0.1"
# Served with every hit; image_path stays out because the back would re-encode that file as
# base64 JPEG (failing on RGBA sources); clients take paths from the index's metadata.
SERVED_COLUMNS = ["image_id", "subject", "caption"]


@dataclass(frozen=True)
class Hit:
    """One search result."""

    rank: int
    score: float  # cosine similarity
    image_id: str
    subject: str | None
    image_path: str
    caption: str


# ---- 1. export ---------------------------------------------------------------------------
def export_fingerprint(store: ShardStore) -> str:
    """The version of everything the export reads: embeddings, images, captions."""
    tables = tuple(t for t in ("embeddings", "images", "captions") if t in TABLES)
    return store.fingerprint(tables)


def export_clip_retrieval(store: ShardStore, profile_name: str,
                          settings: EmbedSettings | None = None) -> dict:
    """Write `<root>/clip_export/` (img_emb, text_emb, metadata); a no-op when up to date."""
    settings = settings or EmbedSettings()
    fs, target = store.fs, store.location.join(EXPORT_DIR)
    fingerprint = export_fingerprint(store)
    marker = store.location.join(EXPORT_DIR, "_export.json")
    if fs.exists(marker):
        with fs.open(marker, "r") as handle:
            previous = json.load(handle)
        if previous["fingerprint"] == fingerprint:
            return {**previous, "skipped": True}
    model = clip_model_id(load_profile(profile_name))
    ids, images = current_vectors(store, IMAGE, model)
    texts = _aligned_texts(store, model, ids, images.shape[1] if ids else 0)
    metadata = _metadata(store, ids)
    staging = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
    files = 0
    for start in range(0, len(ids), settings.export_rows):
        part, rows = f"{files:04d}", slice(start, start + settings.export_rows)
        _save_npy(fs, f"{staging}/img_emb/img_emb_{part}.npy", images[rows])
        if texts is not None:
            _save_npy(fs, f"{staging}/text_emb/text_emb_{part}.npy", texts[rows])
        fs.makedirs(f"{staging}/metadata", exist_ok=True)
        with fs.open(f"{staging}/metadata/metadata_{part}.parquet", "wb") as handle:
            metadata.iloc[rows].to_parquet(handle, index=False)
        files += 1
    record = {"fingerprint": fingerprint, "model_id": model, "rows": len(ids), "files": files,
              "texts": 0 if texts is None else int(np.any(texts != 0, axis=1).sum()),
              "path": store.location.url(target)}
    fs.makedirs(staging, exist_ok=True)
    with fs.open(f"{staging}/_export.json", "w") as handle:
        json.dump(record, handle)
    if fs.exists(target):
        fs.rm(target, recursive=True)
    fs.mv(staging, target, recursive=True)
    return {**record, "skipped": False}


def _aligned_texts(store: ShardStore, model: str, ids: list[str], dim: int) -> np.ndarray | None:
    """Caption vectors in `ids` order (zero rows where there is none); None without captions."""
    text_ids, vectors = current_vectors(store, TEXT, model)
    if not text_ids:
        return None
    row = {image_id: i for i, image_id in enumerate(text_ids)}
    aligned = np.zeros((len(ids), dim), np.float32)
    for i, image_id in enumerate(ids):
        if image_id in row:
            aligned[i] = vectors[row[image_id]]
    return aligned


def _metadata(store: ShardStore, ids: list[str]) -> pd.DataFrame:
    images = {r["image_id"]: r for r in
              store.read("images", ["image_id", "source", "subject", "text"]).to_pylist()}
    latest = latest_captions(store, ["image_id", "composed_caption"])
    captions = dict(zip(latest["image_id"].to_pylist(), latest["composed_caption"].to_pylist()))
    return pd.DataFrame({
        "image_path": [images[i]["source"] for i in ids],
        "caption": [captions[i] if i in captions else images[i]["text"] or "" for i in ids],
        "image_id": ids,
        "subject": [images[i]["subject"] for i in ids],
    })


def _save_npy(fs, path: str, array: np.ndarray) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        np.save(handle, array.astype(np.float16))  # clip-retrieval's layout stores float16


# ---- 2. index ----------------------------------------------------------------------------
def build_index(store: ShardStore, profile_name: str,
                settings: EmbedSettings | None = None) -> dict:
    """Export if needed, then build the kNN indexes with clip-retrieval; records `indexes`."""
    settings = settings or EmbedSettings()
    if not store.location.is_local:
        raise ValueError("clip-retrieval indexes need a local dataset root")
    export = export_clip_retrieval(store, profile_name, settings)
    existing = latest_index(store)
    if existing and existing["fingerprint"] == export["fingerprint"] \
            and os.path.exists(existing["index_path"]):
        return {**existing, "skipped": True}
    if export["rows"] == 0:
        raise ValueError("nothing to index: the embeddings table is empty "
                         "(no images ingested yet? run `tamer ingest SOURCE` first)")
    final = store.location.join(INDEX_DIR, export["fingerprint"])
    staging = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    os.makedirs(staging)
    clip_index_folder(export["path"], staging, settings.index_memory,
                      exact=export["rows"] < settings.index_exact_below)
    if os.path.exists(final):
        os.rename(final, f"{final}.old-{uuid.uuid4().hex[:8]}")
    os.rename(staging, final)
    record = {"index_path": final, "fingerprint": export["fingerprint"],
              "model_id": export["model_id"], "images": export["rows"], "texts": export["texts"],
              "seconds": time.perf_counter() - started, "built_at": dt.datetime.now(dt.UTC)}
    store.write("indexes", pa.Table.from_pylist([record]))
    return {**record, "skipped": False}


def clip_index_folder(export_path: str, index_folder: str, max_memory: str, exact: bool = False) -> None:
    """What `clip_retrieval.clip_index` does (an autofaiss index per modality present, then the
    metadata copied beside them), called on autofaiss directly: importing `clip_retrieval`
    imports its whole inference stack (sentence-transformers, open_clip, torchvision models),
    about 5 s of a 2,000-image `tamer embed` spent on code the index never runs.
    `tests/test_index.py` checks the folder against `clip_index`'s own.

    `exact`: a Flat index (exact search) instead of autofaiss's pick, for small collections
    (`EmbedSettings.index_exact_below`), where the pick's tuning costs seconds and its answers
    are slower than a brute-force scan."""
    for modality, folder in (("image", "img_emb"), ("text", "text_emb")):
        vectors = f"{export_path}/{folder}"
        if os.path.exists(vectors):
            build = _flat_index if exact else functools.partial(_autofaiss_index, max_memory=max_memory)
            build(vectors, f"{index_folder}/{modality}.index", f"{index_folder}/{modality}.json")
    shutil.copytree(f"{export_path}/metadata", f"{index_folder}/metadata")


def _autofaiss_index(vectors: str, index_path: str, infos_path: str, max_memory: str) -> None:
    """autofaiss's pick of index for the vectors, tuned to `max_memory`."""
    from autofaiss import build_index

    logging.getLogger("autofaiss").setLevel(logging.WARNING)  # it logs its whole plan
    # it also prints progress bars; its process-wide logging setup is skipped
    with contextlib.redirect_stdout(io.StringIO()), _process_logging_left_alone():
        build_index(embeddings=vectors, index_path=index_path, index_infos_path=infos_path,
                    max_index_memory_usage=max_memory, current_memory_available="16G",
                    nb_cores=os.cpu_count())


def _flat_index(vectors: str, index_path: str, infos_path: str) -> None:
    """The index autofaiss builds for `index_key="Flat"` (exact inner product over the export's
    float16 vectors, in file order), written by faiss directly with the infos fields that
    describe it. Through autofaiss the same index took 0.3 s a modality for 250 vectors: a
    reader thread pool per file and a search-speed test of 4,000 queries for its infos."""
    import faiss

    parts = sorted(glob.glob(f"{vectors}/*.npy"))
    matrix = np.concatenate([np.load(part) for part in parts]).astype(np.float32)
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    faiss.write_index(index, index_path)
    with open(infos_path, "w") as handle:
        json.dump({"index_key": "Flat", "index_param": "", "metric_type": "ip",
                   "size in bytes": os.path.getsize(index_path), "nb vectors": int(index.ntotal),
                   "vectors dimension": int(index.d)}, handle)


@contextlib.contextmanager
def _process_logging_left_alone() -> Iterator[None]:
    """Each autofaiss build calls `logging.config.dictConfig`, which flushes and closes every
    handler of the process: Prefect's API log handler waited on its server for 2.5 s per call
    (5 of a 12-image `tamer embed`'s 8 s in the index step), and the handlers the run still
    logs through were closed. Its logger is configured above; its process-wide setup is skipped."""
    from autofaiss.external import quantize

    setup = quantize.setup_logging
    quantize.setup_logging = lambda level: None
    try:
        yield
    finally:
        quantize.setup_logging = setup


# store URI -> (its `indexes` table version, that table's last row)
_LATEST_INDEX: dict[str, tuple[int, dict | None]] = {}


def latest_index(store: ShardStore) -> dict | None:
    """The most recently built index (`storage.queries.latest_index`).

    The table is queried again only when its version moved (a commit, including compaction),
    so a client making many queries reads the table's log, not its rows."""
    key = store.version("indexes")
    cached = _LATEST_INDEX.get(store.location.uri)
    if cached is None or cached[0] != key:
        cached = _LATEST_INDEX[store.location.uri] = (key, queries.latest_index(store))
    return dict(cached[1]) if cached[1] is not None else None


def _require_index(store: ShardStore) -> dict:
    index = latest_index(store)
    if index is None or not os.path.exists(index["index_path"]):
        raise FileNotFoundError(f"no kNN index under {store.location.uri}; run `tamer index`")
    return index


# ---- 3. the back service -------------------------------------------------------------------
def write_indices_paths(store: ShardStore) -> str:
    """`<root>/indexes/indices_paths.json`: the file clip-retrieval back reads."""
    index = _require_index(store)
    path = store.location.join(INDEX_DIR, "indices_paths.json")
    with open(path, "w") as handle:
        json.dump({INDICE_NAME: index["index_path"]}, handle)
    return path


def serve(store: ShardStore, profile_name: str, port: int) -> None:
    """Run clip-retrieval's back over the latest index on 127.0.0.1:port (blocks)."""
    from clip_retrieval.clip_back import clip_back

    path, subfolder = resolve(load_profile(profile_name), "clip")
    _bind_loopback_only()
    clip_back(indices_paths=write_indices_paths(store), port=port,
              clip_model=f"hf_clip:{os.path.join(path, subfolder or '')}",
              columns_to_return=SERVED_COLUMNS, enable_mclip_option=False, use_jit=False,
              provide_aesthetic_embeddings=False, provide_safety_model=False,
              provide_violence_detector=False)


def _bind_loopback_only() -> None:
    """clip_back calls `app.run(host="0.0.0.0")`; force loopback whatever it asks for."""
    from flask import Flask

    run = Flask.run

    def loopback_run(self, host=None, port=None, **kwargs):  # noqa: ARG001 - host is ignored
        return run(self, host=LOOPBACK, port=port, **kwargs)

    Flask.run = loopback_run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(root: str, port: int | None = None, config_file: str | None = None,
           timeout_s: float = 90.0) -> Iterator[str]:
    """`tamer serve-index` in a subprocess; yields its URL once ready, always stops it."""
    port = port or free_port()
    command = [sys.executable, "-m", "tamer.cli", "--root", root,
               *(["--config", config_file] if config_file else []), "serve-index",
               "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://{LOOPBACK}:{port}"
        try:
            _wait_ready(url, process, log, timeout_s)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_ready(url: str, process: subprocess.Popen, log, timeout_s: float) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"serve-index exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/indices-list", timeout=2).ok:
                return
        time.sleep(0.5)
    raise TimeoutError(f"serve-index not ready at {url} after {timeout_s:.0f} s")


def service_up(url: str) -> bool:
    import requests

    try:
        return requests.get(f"{url}/indices-list", timeout=2).ok
    except requests.RequestException:
        return False


# ---- 4. queries ----------------------------------------------------------------------------
def search_service(url: str, store: ShardStore, *, text: str | None = None,
                   image: str | None = None, vector: np.ndarray | None = None, k: int = 10,
                   modality: str = IMAGE) -> list[Hit]:
    """Query the back with ClipClient: by text, an image file, or an embedding."""
    from clip_retrieval.clip_client import ClipClient, Modality

    client = ClipClient(f"{url}/knn-service", INDICE_NAME, modality=Modality(modality),
                        num_images=k, deduplicate=False, use_safety_model=False,
                        use_violence_detector=False)
    embedding = None if vector is None else [float(x) for x in vector]
    found = client.query(text=text, image=image, embedding_input=embedding)
    paths = _index_metadata(**_metadata_key(_require_index(store)))["image_path"]
    return [Hit(rank, float(r["similarity"]), r["image_id"], r.get("subject"),
                str(paths.iloc[r["id"]]), r.get("caption") or "")
            for rank, r in enumerate(found)]


def query_vector(profile_name: str, *, text: str | None = None,
                 image: str | Path | None = None) -> np.ndarray:
    """The unit query vector the service would compute, computed in this process."""
    from model.embedding import ClipEmbedder

    embedder = ClipEmbedder.from_profile(load_profile(profile_name))
    if text is not None:
        return embedder.embed_texts([text])[0]
    return embedder.embed_images([Path(image).read_bytes()])[0]


def search_direct(store: ShardStore, vector: np.ndarray, k: int = 10,
                  modality: str = IMAGE) -> list[Hit]:
    """The same query straight on the faiss index file, for when no service runs."""
    import faiss

    record = _require_index(store)
    index = faiss.read_index(os.path.join(record["index_path"], f"{modality}.index"))
    scores, rows = index.search(np.asarray(vector, np.float32).reshape(1, -1), k)
    metadata = _index_metadata(**_metadata_key(record))
    return [Hit(rank, float(score), *_row(metadata, int(row)))
            for rank, (score, row) in enumerate(zip(scores[0], rows[0])) if row >= 0]


def search(store: ShardStore, profile_name: str, *, text: str | None = None,
           image: str | None = None, k: int = 10, modality: str = IMAGE,
           url: str | None = None) -> tuple[str, list[Hit]]:
    """("service", hits) from the back at `url` when it answers, else ("faiss", hits) from the
    index file with the query embedded in this process."""
    if url and service_up(url):
        return "service", search_service(url, store, text=text, image=image, k=k,
                                         modality=modality)
    vector = query_vector(profile_name, text=text, image=image)
    return "faiss", search_direct(store, vector, k=k, modality=modality)


def _row(metadata: pd.DataFrame, row: int) -> tuple:
    record = metadata.iloc[row]
    subject = record["subject"] if isinstance(record["subject"], str) else None
    return record["image_id"], subject, record["image_path"], record["caption"] or ""


def _metadata_key(record: dict) -> dict:
    return {"index_path": record["index_path"], "built_at": record["built_at"]}


@functools.lru_cache(maxsize=4)
def _index_metadata(index_path: str, built_at: dt.datetime) -> pd.DataFrame:
    """Row-aligned metadata, in the order clip-retrieval reads it (sorted file names).

    Read once per built index, not once per query (a client making many queries would
    otherwise re-read every row each time); `built_at` tells a rebuilt index apart. Shared
    between callers: read it, never modify it."""
    files = sorted(Path(index_path, "metadata").glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def hits_as_dicts(hits: list[Hit]) -> list[dict]:
    return [asdict(hit) for hit in hits]
