"""Dataset tab: subjects with images, captions and attributes; the quarantine; near-duplicate
clusters; cross-reference pairs; kNN search; the counts `tamer stats` prints.

Every function reads through `AppContext` (the read-only catalog) and returns plain data.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from tamer.app.reader import AppContext
from tamer.app.uploads import UserError, validated_upload
from tamer.stats import LATEST_CAPTIONS

Gallery = list[tuple[Image.Image, str]]
NEWEST_PAIRS = "snapshot = (SELECT snapshot FROM pairs ORDER BY created_at DESC LIMIT 1)"


def counts(ctx: AppContext) -> dict[str, Any]:
    """The overview and sections of `tamer stats` (the same function, so they match)."""
    return ctx.stats()


def subjects(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, subject) per subject of a `counts` result, largest first, as `tamer stats`
    lists them."""
    return [(f"{row['subject']} · {row['class'] or '?'} · {row['images']} images",
             row["subject"]) for row in result["per_subject"] if row["subject"] != "(none)"]


def subject_images(ctx: AppContext, subject: str) -> tuple[Gallery, list[dict[str, Any]]]:
    """The subject's images, and one row per image: its raw and composed captions (the
    newest caption config, the one training reads) and attributes."""
    rows = ctx.rows(
        "SELECT i.image_id, i.source, i.width, i.height, c.raw_caption, c.composed_caption, "
        f"c.attributes FROM images i LEFT JOIN {LATEST_CAPTIONS} c USING (image_id) "
        "WHERE i.subject = ? ORDER BY i.source", [subject])
    images = ctx.images([row["image_id"] for row in rows])
    gallery = [(images[row["image_id"]], row["composed_caption"] or _name(row["source"]))
               for row in rows]
    table = [{"image": _name(row["source"]), "size": f"{row['width']}x{row['height']}",
              "raw caption": row["raw_caption"] or "(not captioned yet)",
              "composed caption": row["composed_caption"] or "",
              "attributes": _attributes(row["attributes"])} for row in rows]
    return gallery, table


def _attributes(values: list[dict] | None) -> str:
    """'color: red (0.91), material: wood (0.55)'; the ones named in the caption first."""
    ordered = sorted(values or [], key=lambda v: (not v["named"], -(v["probability"] or 0)))
    return ", ".join(f"{v['attribute']}: {v['value']} ({v['probability']:.2f})" for v in ordered)


def quarantine(ctx: AppContext, limit: int = 1000) -> list[dict[str, Any]]:
    """Quarantined inputs, newest first, with the reason and its detail."""
    return ctx.rows("SELECT reason, source, detail, stage, quarantined_at FROM quarantine "
                    "ORDER BY quarantined_at DESC, source LIMIT ?", [limit])


def clusters(ctx: AppContext) -> list[dict[str, Any]]:
    """Near-duplicate pairs joined into clusters (connected components), largest first:
    {"images": [ids], "max_cosine": float}."""
    pairs = ctx.rows("SELECT image_id, other_id, cosine FROM near_duplicates")
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for pair in pairs:
        parent[find(pair["image_id"])] = find(pair["other_id"])
    members: dict[str, list[str]] = {}
    for node in sorted(parent):
        members.setdefault(find(node), []).append(node)
    best: dict[str, float] = {}
    for pair in pairs:
        root = find(pair["image_id"])
        best[root] = max(best.get(root, -1.0), float(pair["cosine"]))
    return sorted(({"images": ids, "max_cosine": best[root]} for root, ids in members.items()),
                  key=lambda c: (-len(c["images"]), -c["max_cosine"], c["images"][0]))


def cluster_gallery(ctx: AppContext, image_ids: list[str]) -> Gallery:
    """One cluster's images side by side, labelled with subject and source."""
    rows = {row["image_id"]: row for row in ctx.rows(
        f"SELECT image_id, subject, source FROM images WHERE image_id IN "
        f"({', '.join('?' * len(image_ids))})", image_ids)} if image_ids else {}
    images = ctx.images(list(rows))
    return [(images[i], f"{rows[i]['subject'] or '-'} · {_name(rows[i]['source'])}")
            for i in image_ids if i in images]


def pair_groups(ctx: AppContext) -> list[tuple[str, str]]:
    """(label, group) of the newest pairs snapshot, most pairs first."""
    return [(f"{row['subject']} · {row['pairs']} pairs", row["subject"]) for row in ctx.rows(
        f"SELECT subject, count(*) AS pairs FROM pairs WHERE {NEWEST_PAIRS} "
        "GROUP BY 1 ORDER BY 2 DESC, 1")]


def pair_gallery(ctx: AppContext, group: str, limit: int = 24) -> Gallery:
    """Reference, target, reference, target ...: shown two per row."""
    pairs = ctx.rows(f"SELECT reference_id, target_id FROM pairs WHERE {NEWEST_PAIRS} "
                     "AND subject = ? ORDER BY 1, 2 LIMIT ?", [group, limit])
    images = ctx.images(sorted({i for p in pairs for i in (p["reference_id"], p["target_id"])}))
    return [(images[pair[key]], f"{label} {pair[key][:8]}") for pair in pairs
            for key, label in (("reference_id", "reference"), ("target_id", "target"))
            if pair[key] in images]


def search(ctx: AppContext, text: str | None, image_path: str | None,
           k: int = 12) -> tuple[Gallery, str]:
    """Nearest images by text or by an image file, through the clip-retrieval index (its
    service when `ctx.index_url` answers, else the index file): (gallery, status line)."""
    from tasks.index import search as knn_search

    text = (text or "").strip() or None
    if (text is None) == (image_path is None):
        return [], "give either a text or an image (not both)"
    try:
        image = str(validated_upload(ctx, image_path)) if image_path else None
        via, hits = knn_search(ctx.store, ctx.config.profile, text=text, image=image,
                               k=int(k), url=ctx.index_url)
    except UserError as exc:
        return [], str(exc)
    except FileNotFoundError as exc:
        return [], f"no search index: {exc}"
    images = ctx.images([hit.image_id for hit in hits])
    gallery = [(images[hit.image_id], f"{hit.rank + 1}. {hit.score:.3f} {hit.subject or ''}")
               for hit in hits if hit.image_id in images]
    return gallery, f"{len(gallery)} nearest images (via {via})"


def _name(source: str) -> str:
    """The last two parts of a source path: enough to recognize it, short enough to show."""
    return "/".join(source.replace("\\", "/").rstrip("/").split("/")[-2:])


def overview_text(result: dict[str, Any]) -> str:
    """The headline counts, worded like `tamer stats`' overview."""
    overview = result["overview"]
    quarantined = overview["tables"]["quarantine"]["rows"]
    return (f"**{overview['images']}** images · **{overview['subjects']}** subjects · "
            f"**{overview['classes']}** classes · **{quarantined}** quarantined · "
            f"dataset version `{overview['fingerprint']}`")


def build(ctx: AppContext, demo) -> None:
    """The tab's components and events, inside `demo` (a `gr.Blocks`), refreshed on load."""
    import gradio as gr
    import pandas as pd

    def frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=columns)

    summary = gr.Markdown(elem_id="dataset-summary")
    with gr.Tab("Subjects"):
        subject = gr.Dropdown(label="Subject", choices=[], elem_id="subject")
        subject_gallery = gr.Gallery(label="Images (caption: composed)", columns=6,
                                     height="auto", elem_id="subject-images")
        captions = gr.Dataframe(label="Captions and attributes", wrap=True, interactive=False)
    with gr.Tab("Quarantine", elem_id="quarantine-tab"):
        reasons = gr.Dataframe(label="Reasons", interactive=False, max_height=260,
                               elem_id="quarantine-reasons")
        quarantined = gr.Dataframe(label="Quarantined inputs", wrap=True, interactive=False,
                                   elem_id="quarantine")
    with gr.Tab("Near-duplicates"):
        cluster = gr.Dropdown(label="Cluster", choices=[], elem_id="cluster")
        cluster_images = gr.Gallery(label="Side by side", columns=6, height="auto")
    with gr.Tab("Pairs"):
        group = gr.Dropdown(label="Subject group", choices=[], elem_id="pair-group")
        pair_images = gr.Gallery(label="Cross-reference pairs (reference | target)",
                                 columns=2, height="auto")
    with gr.Tab("Search"):
        with gr.Row():
            query = gr.Textbox(label="Text", placeholder="a red star", elem_id="search-text")
            query_image = gr.File(label="... or an image", type="filepath")
            k = gr.Slider(1, 48, value=12, step=1, label="Results")
        search_button = gr.Button("Search", elem_id="search")
        search_status = gr.Markdown()
        hits = gr.Gallery(label="Nearest", columns=6, height="auto")
    with gr.Tab("Counts"):
        tables = gr.Dataframe(label="Tables (as tamer stats counts them)", interactive=False,
                              elem_id="table-counts")
        per_class = gr.Dataframe(label="Images per class", interactive=False)
    found_clusters = gr.State([])

    def on_load():
        result = counts(ctx)
        table_rows = [{"table": name, **info} for name, info in
                      result["overview"]["tables"].items()]
        groups, subject_choices = clusters(ctx), subjects(result)
        cluster_choices = [(f"{len(c['images'])} images, cosine up to {c['max_cosine']:.3f}", i)
                           for i, c in enumerate(groups)]
        pairs_choices = pair_groups(ctx)
        return (overview_text(result),
                gr.Dropdown(choices=subject_choices,
                            value=subject_choices[0][1] if subject_choices else None),
                frame(result["quarantine_reasons"], ["stage", "reason", "items"]),
                frame(quarantine(ctx), ["reason", "source", "detail", "stage", "quarantined_at"]),
                gr.Dropdown(choices=cluster_choices, value=0 if groups else None), groups,
                gr.Dropdown(choices=pairs_choices,
                            value=pairs_choices[0][1] if pairs_choices else None),
                frame(table_rows, ["table", "shards", "rows", "bytes"]),
                frame(result["per_class"], ["class", "images", "subjects"]))

    def on_subject(name: str | None):
        gallery, rows = subject_images(ctx, name) if name else ([], [])
        return gallery, frame(rows, ["image", "size", "raw caption", "composed caption",
                                     "attributes"])

    def on_cluster(index, groups):
        return cluster_gallery(ctx, groups[index]["images"]) if index is not None else []

    demo.load(on_load, None, [summary, subject, reasons, quarantined, cluster, found_clusters,
                              group, tables, per_class], show_progress="hidden")
    subject.change(on_subject, subject, [subject_gallery, captions])
    cluster.change(on_cluster, [cluster, found_clusters], cluster_images)
    group.change(lambda g: pair_gallery(ctx, g) if g else [], group, pair_images)
    search_button.click(lambda text, path, count: search(ctx, text, path, count),
                        [query, query_image, k], [hits, search_status])
