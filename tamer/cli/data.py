"""Data commands: synth, ingest, caption, embed, index, serve-index, search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from tamer.cli.common import (JsonFlag, ProfileOption, console, fail, print_ingest, print_json, print_reasons,
                              ran_where, state)

Executor = Annotated[Optional[str], typer.Option(help="ray (default) or local.")]
Profile = ProfileOption


def synth(
    out: Annotated[Path, typer.Option(help="Folder to write the dataset to.")] = Path("synth"),
    objects: Annotated[Optional[int], typer.Option(help="Number of object identities.")] = None,
    views: Annotated[Optional[int], typer.Option(help="Images per object.")] = None,
    size: Annotated[Optional[int], typer.Option(help="Image side in pixels.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    workers: Annotated[int, typer.Option(help="Parallel processes.")] = 1,
    as_json: JsonFlag = False,
) -> None:
    """Render a procedural multi-view object dataset (images, masks, ground truth)."""
    from tamer.synth import generate

    settings = state.config(**{"synth.objects": objects, "synth.views": views,
                               "synth.size": size, "synth.seed": seed}).synth
    summary = generate(out, n_objects=settings.objects, views=settings.views, size=settings.size,
                       seed=settings.seed, workers=workers,
                       held_out_fraction=settings.held_out_fraction, progress=not as_json)
    result = {"out": str(out), **_as_dict(summary)}
    print_json(result) if as_json else console.print(f"wrote synth dataset to {out}: {result}")


def _as_dict(value: Any) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) else dict(value)


def ingest(
    source: Annotated[str, typer.Argument(help="Folder, WebDataset .tar, or .parquet file.")],
    executor: Executor = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest images into shards: decode, validate, dedupe, quarantine bad input."""
    config, overrides = state.resolve(**{"ingest.executor": executor})
    if not Path(source).exists():
        fail(f"source {source} does not exist", 2)
    from flows.ingest import ingest_flow

    report = ingest_flow(source, root=config.root, config_file=state.config_path(),
                         overrides=overrides)
    print_json(report) if as_json else print_ingest(report)


def caption(
    executor: Executor = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per model call.")] = None,
    profile: Profile = None,
    as_json: JsonFlag = False,
) -> None:
    """Caption images: VLM caption + CLIP attributes, composed into training captions."""
    config, overrides = state.resolve(**{"caption.executor": executor,
                                         "caption.batch_size": batch_size, "profile": profile})
    from flows.caption import caption_flow
    from model.profiles import ModelLoadError

    try:
        report = caption_flow(root=config.root, config_file=state.config_path(),
                              overrides=overrides)
    except (ModelLoadError, ValueError) as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(report)
        return
    console.print(
        f"captioned [bold]{report['captioned']}[/bold] images "
        f"({report['skipped']} already captioned, "
        f"{report['quarantined']} quarantined) in {report['shards']} shard(s) with "
        f"{report['captioner_id']} + {report['clip_id']}, config {report['config_hash']}")
    print_reasons(report["reasons"])


def embed(executor: Executor = None, profile: Profile = None, as_json: JsonFlag = False) -> None:
    """CLIP embeddings, clip-retrieval index, near-duplicates, subject groups and pairs."""
    config, overrides = state.resolve(**{"embed.executor": executor, "profile": profile})
    from flows.embed import embed_flow

    report = embed_flow(root=config.root, config_file=state.config_path(), overrides=overrides)
    if as_json:
        print_json(report)
        return
    e, g, q = report["embed"], report["groups"], report["groups"]["quality"]
    console.print(f"embedded [bold]{e['images']}[/bold] images and {e['texts']} captions "
                  f"({e['skipped']} already done) with {e['model_id']}{ran_where(e['executor'])}")
    console.print(f"index: {report['index']['index_path']} ({report['index']['images']} images)")
    console.print(f"near-duplicates: {report['near_duplicates']['new']} new, "
                  f"{report['near_duplicates']['total']} total")
    console.print(f"subject groups: {g['groups']} ({g['labeled']} labeled images, "
                  f"{g['proposed']} grouped by kNN, {g['ungrouped']} ungrouped)")
    if q:
        console.print(f"kNN grouping vs ground truth: purity {q['purity']:.3f}, "
                      f"recall {q['recall']:.3f} ({q['groups']} groups, "
                      f"{q['identities']} identities)")
    console.print(f"pairs: {report['pairs']['pairs']} over {report['pairs']['subjects']} subjects")


def index(profile: Profile = None, as_json: JsonFlag = False) -> None:
    """Export embeddings for clip-retrieval and build its kNN indexes (autofaiss)."""
    config = state.config(profile=profile)
    from storage.shards import ShardStore
    from tasks.index import build_index

    try:
        record = build_index(ShardStore(config.root), config.profile, config.embed)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), 1)
    if as_json:
        print_json(record)
        return
    state_note = "up to date" if record["skipped"] else f"built in {record['seconds']:.1f} s"
    console.print(f"index {record['index_path']}: {record['images']} images, "
                  f"{record['texts']} captions ({state_note})")


def serve_index(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (loopback only).")] = 1234,
    profile: Profile = None,
) -> None:
    """Serve the latest kNN index with clip-retrieval's back, on 127.0.0.1 only."""
    config = state.config(profile=profile)
    from storage.shards import ShardStore
    from tasks.index import serve

    try:
        serve(ShardStore(config.root), config.profile, port)
    except FileNotFoundError as exc:
        fail(str(exc), 1)


def search(
    text: Annotated[Optional[str], typer.Option(help="Find images matching this text.")] = None,
    image: Annotated[Optional[Path], typer.Option(help="Find images like this file.")] = None,
    k: Annotated[int, typer.Option(help="Number of results.")] = 10,
    modality: Annotated[str, typer.Option(help="Index to search: image or text.")] = "image",
    url: Annotated[str, typer.Option(help="clip-retrieval back URL.")] = "http://127.0.0.1:1234",
    direct: Annotated[bool, typer.Option(
        "--direct", help="Query the faiss index file, not the service.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Nearest images by text or image: via the served index, else the index file directly."""
    if (text is None) == (image is None) or modality not in ("image", "text"):
        fail("give exactly one of --text or --image; --modality image|text", 2)
    if image is not None and not image.is_file():
        fail(f"image {image} does not exist", 2)
    config = state.config()
    from storage.shards import ShardStore
    from tasks import index as knn

    store = ShardStore(config.root)
    try:
        via, hits = knn.search(store, config.profile, text=text,
                               image=str(image) if image else None, k=k, modality=modality,
                               url=None if direct else url)
    except FileNotFoundError as exc:
        fail(str(exc), 1)
    if as_json:
        print_json({"via": via, "hits": knn.hits_as_dicts(hits)})
        return
    table = Table("rank", "score", "subject", "image_id", "source", title=f"nearest ({via})")
    for hit in hits:
        table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.subject or "",
                      hit.image_id[:12], hit.image_path)
    console.print(table)
