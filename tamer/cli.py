"""The `tamer` command line: thin wrappers that resolve config and call flows or tasks.

Exit codes: 0 success, 1 the work failed, 2 bad usage or invalid configuration.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from tamer.config import ConfigError, TamerConfig, load_config

app = typer.Typer(help="tamer: zero fine-tuning image customization, with its data pipeline.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class State:
    root: Optional[str] = None
    config_file: Optional[Path] = None

    def config(self, **overrides: Any) -> TamerConfig:
        try:
            return load_config(self.config_file, root=self.root, **overrides)
        except ConfigError as exc:
            _fail(str(exc), 2)


state = State()


@app.callback()
def main(
    ctx: typer.Context,
    root: Annotated[Optional[str], typer.Option(
        "--root", envvar="TAMER_ROOT",
        help="Dataset root URI (local path, s3://..., memory://...). Default ./tamer-data.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML file overriding configs/default.yaml.")] = None,
) -> None:
    """Global options shared by every command."""
    state.root, state.config_file = root, config
    if ctx.invoked_subcommand in {"ingest", "caption", "embed", "run", "train", "eval", "serve"}:
        from flows.server import ensure_prefect_api  # one local server for side-by-side commands

        ensure_prefect_api()


def _fail(message: str, code: int) -> NoReturn:
    """Say what went wrong on stderr (red) and exit: 1 the work failed, 2 bad usage."""
    err.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<blob {len(value)} bytes>"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


@app.command()
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
    _print_json(result) if as_json else console.print(f"wrote synth dataset to {out}: {result}")


def _as_dict(value: Any) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) else dict(value)


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="Folder, WebDataset .tar, or .parquet file.")],
    executor: Annotated[Optional[str], typer.Option(help="ray (default) or local.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest images into shards: decode, validate, dedupe, quarantine bad input."""
    from flows.ingest import ingest_flow

    config = state.config(**{"ingest.executor": executor})
    if not Path(source).exists():
        _fail(f"source {source} does not exist", 2)
    report = ingest_flow(source, root=config.root, config_file=_config_path())
    _print_json(report) if as_json else _print_ingest(report)


def _config_path() -> Optional[str]:
    return str(state.config_file) if state.config_file else None


def _print_ingest(report: dict) -> None:
    console.print(
        f"ingested [bold]{report['ingested']}[/bold] new images "
        f"({report['unchanged']} unchanged, {report['duplicates']} duplicates skipped, "
        f"{report['quarantined']} quarantined) in {report['shards']} shard(s); "
        f"dataset version {report['fingerprint']}")
    for reason, count in sorted(report["reasons"].items()):
        console.print(f"  quarantine: {reason} x{count}")


@app.command()
def caption(
    executor: Annotated[Optional[str], typer.Option(help="ray (default) or local.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Images per model call.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Model profile (tiny, sd15, ...).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Caption images: VLM caption + CLIP attributes, composed into training captions."""
    from flows.caption import caption_flow
    from model.profiles import ModelLoadError

    config = state.config(**{"caption.executor": executor, "caption.batch_size": batch_size,
                             "profile": profile})
    try:
        report = caption_flow(root=config.root, config_file=_config_path(),
                              profile=config.profile)
    except (ModelLoadError, ValueError) as exc:
        _fail(str(exc), 2)
    if as_json:
        _print_json(report)
        return
    console.print(
        f"captioned [bold]{report['captioned']}[/bold] images "
        f"({report['skipped']} already captioned, "
        f"{report['quarantined']} quarantined) in {report['shards']} shard(s) with "
        f"{report['captioner_id']} + {report['clip_id']}, config {report['config_hash']}")
    for reason, count in sorted(report["reasons"].items()):
        console.print(f"  quarantine: {reason} x{count}")


@app.command()
def stats(
    as_json: JsonFlag = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a PNG figure.")] = None,
) -> None:
    """Dataset statistics from the DuckDB catalog."""
    from storage.catalog import connect
    from storage.shards import ShardStore
    from tamer import stats as dataset_stats
    from tamer.stats_view import plot as plot_stats, render

    store = ShardStore(state.config().root)
    with connect(store) as con:
        result = dataset_stats.collect(store, con)
    if as_json:
        _print_json(result)
    else:
        render(result, console)
    if plot:
        console.print(f"plot written to {plot_stats(result, plot)}") if not as_json else \
            plot_stats(result, plot)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL over the catalog views (images, ...).")],
    as_json: JsonFlag = False,
    limit: Annotated[int, typer.Option(help="Rows to show in the table view.")] = 50,
) -> None:
    """Run an ad-hoc DuckDB query against the catalog."""
    import duckdb

    from storage.catalog import connect
    from storage.shards import ShardStore

    store = ShardStore(state.config().root)
    with connect(store) as con:
        try:
            cursor = con.execute(query)
        except duckdb.Error as exc:
            _fail(f"query failed: {exc}", 1)
        names = [column[0] for column in cursor.description or []]
        rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    if as_json:
        _print_json(rows)
        return
    table = Table(*names)
    for row in rows[:limit]:
        table.add_row(*(_cell(value) for value in row.values()))
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit} more rows (--limit or --json)"
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<blob {len(value)} bytes>"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


@app.command()
def embed(
    executor: Annotated[Optional[str], typer.Option(help="ray (default) or local.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Model profile (tiny, sd15, ...).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """CLIP embeddings, clip-retrieval index, near-duplicates, subject groups and pairs."""
    from flows.embed import embed_flow

    config = state.config(**{"embed.executor": executor, "profile": profile})
    report = embed_flow(root=config.root, config_file=_config_path(), profile=config.profile)
    if as_json:
        _print_json(report)
        return
    e, g, q = report["embed"], report["groups"], report["groups"]["quality"]
    console.print(f"embedded [bold]{e['images']}[/bold] images and {e['texts']} captions "
                  f"({e['skipped']} already done) with {e['model_id']}")
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


@app.command()
def index(
    profile: Annotated[Optional[str], typer.Option(help="Model profile (tiny, sd15, ...).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Export embeddings for clip-retrieval and build its kNN indexes (autofaiss)."""
    from storage.shards import ShardStore
    from tasks.index import build_index

    config = state.config(profile=profile)
    try:
        record = build_index(ShardStore(config.root), config.profile, config.embed)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc), 1)
    if as_json:
        _print_json(record)
        return
    state_note = "up to date" if record["skipped"] else f"built in {record['seconds']:.1f} s"
    console.print(f"index {record['index_path']}: {record['images']} images, "
                  f"{record['texts']} captions ({state_note})")


@app.command("serve-index")
def serve_index(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (loopback only).")] = 1234,
    profile: Annotated[Optional[str], typer.Option(help="Model profile (tiny, sd15, ...).")] = None,
) -> None:
    """Serve the latest kNN index with clip-retrieval's back, on 127.0.0.1 only."""
    from storage.shards import ShardStore
    from tasks.index import serve

    config = state.config(profile=profile)
    try:
        serve(ShardStore(config.root), config.profile, port)
    except FileNotFoundError as exc:
        _fail(str(exc), 1)


@app.command()
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
    from storage.shards import ShardStore
    from tasks import index as knn

    if (text is None) == (image is None) or modality not in ("image", "text"):
        _fail("give exactly one of --text or --image; --modality image|text", 2)
    if image is not None and not image.is_file():
        _fail(f"image {image} does not exist", 2)
    config = state.config()
    store = ShardStore(config.root)
    try:
        if not direct and knn.service_up(url):
            via = "service"
            hits = knn.search_service(url, store, text=text, image=str(image) if image else None,
                                      k=k, modality=modality)
        else:
            via = "faiss"
            vector = knn.query_vector(config.profile, text=text, image=image)
            hits = knn.search_direct(store, vector, k=k, modality=modality)
    except FileNotFoundError as exc:
        _fail(str(exc), 1)
    if as_json:
        _print_json({"via": via, "hits": knn.hits_as_dicts(hits)})
        return
    table = Table("rank", "score", "subject", "image_id", "source", title=f"nearest ({via})")
    for hit in hits:
        table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.subject or "",
                      hit.image_id[:12], hit.image_path)
    console.print(table)


@app.command()
def run(
    data: Annotated[Optional[str], typer.Option(
        help="Source to ingest; default: a synthesized sample dataset.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Model profile (tiny, sd15, ...).")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML overriding configs/default.yaml (same as the global option).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The main job: ingest, caption, embed/index/pairs, train, evaluate, report.

    On the embedded default (no arguments) it runs on a synthesized sample dataset with the
    tiny profile; a second run with no new data redoes no stage's work.
    """
    from flows.pipeline import pipeline_flow

    if config is not None:
        state.config_file = config
    settings = state.config(profile=profile)
    if data is not None and not Path(data).exists():
        _fail(f"source {data} does not exist", 2)
    summary = pipeline_flow(data=data, root=settings.root, config_file=_config_path(),
                            profile=settings.profile)
    if as_json:
        _print_json(summary)
        return
    _print_ingest(summary["ingest"])
    stats(as_json=False, plot=None)
    console.print(f"train: {summary['train']['policy']} (run {summary['train']['run_id']})")
    console.print(f"evaluate: {summary['evaluate']['policy']}")
    timing = ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in summary["seconds"].items())
    console.print(f"stage times: {timing}")
    for name, where in summary["locations"].items():
        console.print(f"{name}: [bold]{where}[/bold]")
    console.print('next: tamer stats, tamer sql "SELECT ...", tamer runs, tamer generate --help')


models_app = typer.Typer(help="Model profiles: check what each role loads.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("check")
def models_check(
    profile: Annotated[str, typer.Option(help="Profile name (configs/profiles) or YAML path.")
                       ] = "tiny",
    as_json: JsonFlag = False,
) -> None:
    """Dry-run a profile without downloading: ids, classes, local cache (tiny: build + load)."""
    from model.profiles import check_profile

    checks = [check.model_dump() for check in check_profile(profile)]
    if as_json:
        _print_json(checks)
    else:
        table = Table("role", "id", "status", "detail", title=f"profile {profile}")
        for check in checks:
            status = ("[red]error[/red]" if not check["ok"] else
                      "[yellow]warning[/yellow]" if check["warning"] else "[green]ok[/green]")
            table.add_row(check["role"], check["id"] or "(none)", status, check["reason"])
        console.print(table)
    if not all(check["ok"] for check in checks):
        raise typer.Exit(1)


@app.command()
def serve(
    only: Annotated[Optional[list[str]], typer.Option(
        "--only", help="Serve only these deployments (repeatable).")] = None,
    source: Annotated[Optional[str], typer.Option(
        help="Folder the scheduled ingest reads (default ./incoming).")] = None,
) -> None:
    """Serve the prefect.yaml deployments (schedules and event triggers) from one process.

    Needs a Prefect server (PREFECT_API_URL); see README "Run it on a schedule".
    """
    from prefect import serve as prefect_serve

    from flows.deployments import build_all

    config = state.config()
    parameters = {"root": config.root, "config_file": _config_path(), "source": source}
    try:
        deployments = build_all(only, {k: v for k, v in parameters.items() if v is not None})
    except ValueError as exc:
        _fail(str(exc), 2)
    err.print(f"serving {', '.join(d.name for d in deployments)} (Ctrl-C to stop)")
    prefect_serve(*deployments)


@app.command()
def train(
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray Train workers (DDP ranks).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Rows per worker per micro-batch.")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--cpu", help="One GPU per worker.")] = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="Dataset fingerprint to train on; default (and only readable): the current one.")] = None,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="Continue RUN_ID from its newest checkpoint, with its recorded config.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train on the current dataset version with Ray Train; checkpoints under <root>/runs."""
    from flows.train import train_flow

    overrides = {"train.steps": steps, "train.num_workers": workers,
                 "train.batch_size": batch_size, "train.use_gpu": gpu}
    config = state.config(**overrides)
    try:
        report = train_flow(root=config.root, config_file=_config_path(), dataset=dataset, resume=resume,
                            overrides={k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        _fail(str(exc), 2)
    except Exception as exc:  # noqa: BLE001 - the run is registered as failed; say why and exit 1
        _fail(f"training failed: {type(exc).__name__}: {exc}", 1)
    if as_json:
        _print_json(report)
        return
    console.print(f"run [bold]{report['run_id']}[/bold]: step {report['step']} "
                  f"(started at {report['start_step']}), loss {report['metrics'].get('loss', float('nan')):.4f}")
    console.print(f"pipeline: [bold]{report['pipeline_uri']}[/bold]")


@app.command("runs")
def list_training_runs(as_json: JsonFlag = False) -> None:
    """The run registry: one line per training run (its newest row)."""
    from storage.shards import ShardStore
    from tasks.runs import list_runs

    rows = list_runs(ShardStore(state.config().root))
    for row in rows:
        row.pop("config")
    if as_json:
        _print_json(rows)
        return
    table = Table("run", "status", "step", "dataset", "started", "minutes", "loss",
                  caption="pipelines under <root>/runs/<run>/pipeline; all fields: --json")
    for row in rows:
        minutes = ((row["ended_at"] - row["started_at"]).total_seconds() / 60
                   if row["ended_at"] else None)
        loss = json.loads(row["final_metrics"] or "{}").get("loss")
        table.add_row(row["run_id"], row["status"], _cell(row["step"]),
                      row["dataset_fingerprint"], f"{row['started_at']:%Y-%m-%d %H:%M}",
                      f"{minutes:.1f}" if minutes is not None else "",
                      f"{loss:.4f}" if isinstance(loss, float) else "")
    console.print(table)


@app.command("generate")
def generate_images(
    checkpoint: Annotated[Path, typer.Option(help="A run's exported pipeline directory.")],
    image: Annotated[Path, typer.Option(help="One reference photo of the object.")],
    prompt: Annotated[str, typer.Option(help='Text with "{}" for the object.')],
    out: Annotated[Path, typer.Option(help="Folder for the PNGs and settings.json.")],
    n: Annotated[int, typer.Option(help="Images to generate.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 30,
    as_json: JsonFlag = False,
) -> None:
    """Images of the reference's object for a prompt, in one pass (no fine-tuning)."""
    from model.generate import generate

    for path in (checkpoint, image):
        if not path.exists():
            _fail(f"{path} does not exist", 2)
    paths = generate(checkpoint, image, prompt, n=n, seed=seed, out_dir=out, steps=steps)
    if as_json:
        _print_json([str(p) for p in paths])
        return
    console.print(f"wrote {len(paths)} image(s) to [bold]{out}[/bold]")


@app.command("eval")
def evaluate(
    data: Annotated[Optional[str], typer.Option(
        help="DreamBench-layout or synth folder; default: the dataset's held-out subjects.")] = None,
    pipeline: Annotated[Optional[str], typer.Option(
        help="TamerPipeline directory; default: the latest completed training run's.")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Training run to evaluate.")] = None,
    methods: Annotated[Optional[str], typer.Option(
        help="Comma-separated: ours, ti (textual_inversion), lora (dreambooth_lora), real.")] = None,
    subjects: Annotated[Optional[int], typer.Option(help="First N subjects.")] = None,
    prompts: Annotated[Optional[int], typer.Option(help="First N prompts per subject.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Images (seeds) per prompt.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Sampling steps.")] = None,
    ti_steps: Annotated[Optional[int], typer.Option(help="Textual Inversion steps.")] = None,
    lora_steps: Annotated[Optional[int], typer.Option(help="DreamBooth-LoRA steps.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Model profile (tiny, sd15, ...).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Evaluate against Textual Inversion and DreamBooth-LoRA (DreamBench protocol) + report."""
    from flows.evaluate import evaluate_flow

    config = state.config(profile=profile)
    settings = {key: value for key, value in {
        "data": data, "pipeline": pipeline, "methods": methods, "subjects": subjects,
        "prompts": prompts, "seeds": seeds, "steps": steps}.items() if value is not None}
    for key, value in (("textual_inversion", ti_steps), ("dreambooth_lora", lora_steps)):
        if value is not None:
            settings[key] = {**getattr(config.eval, key), "steps": value}
    config = state.config(profile=profile, **{f"eval.{k}": v for k, v in settings.items()})
    if config.eval.data and not Path(config.eval.data).is_dir():
        _fail(f"data folder {config.eval.data} does not exist", 2)
    try:
        summary = evaluate_flow(root=config.root, config_file=_config_path(), profile=config.profile,
                                run_id=run_id, settings=settings)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc), 1)
    if as_json:
        _print_json(summary)
        return
    console.print(f"evaluation [bold]{summary['eval_run_id']}[/bold]: {summary['rows']} images of "
                  f"{summary['subjects']} subjects by {', '.join(summary['methods'])}")
    console.print(f"report: [bold]{summary['report']}[/bold]")


if __name__ == "__main__":
    app()
