"""Model commands: `models check` (dry-run a profile), `models train-profile` (train the `synth`
profile from scratch) and `generate` (images from a checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tamer.cli.common import JsonFlag, console, fail, print_json, state

models_app = typer.Typer(help="Model profiles: check what each role loads.", no_args_is_help=True)


def check(
    profile: Annotated[str, typer.Option(help="Profile name (configs/profiles) or YAML path.")
                       ] = "tiny",
    as_json: JsonFlag = False,
) -> None:
    """Dry-run a profile without downloading: ids, classes, local cache (tiny: build + load)."""
    from model.profile_check import check_profile

    checks = [check.model_dump() for check in check_profile(profile)]
    if as_json:
        print_json(checks)
    else:
        table = Table("role", "id", "status", "detail", title=f"profile {profile}")
        for check in checks:
            status = ("[red]error[/red]" if not check["ok"] else
                      "[yellow]warning[/yellow]" if check["warning"] else "[green]ok[/green]")
            table.add_row(check["role"], check["id"] or "(none)", status, check["reason"])
        console.print(table)
    if not all(check["ok"] for check in checks):
        raise typer.Exit(1)


def train_profile(
    out: Annotated[Path, typer.Option(help="Folder for the profile: HF folders, <name>.yaml, provenance.json.")],
    recipe: Annotated[str, typer.Option(help="full (the shipped profile) or smoke (every role, seconds).")
                      ] = "full",
    seed: Annotated[int, typer.Option(help="Seed of the renders and every role's training.")] = 0,
    name: Annotated[str, typer.Option(help="Profile name written in the YAML.")] = "synth",
    threads: Annotated[int, typer.Option(help="Torch threads per role (0: the CPUs shared between the chains).")
                       ] = 0,
    side_by_side: Annotated[bool, typer.Option(
        "--side-by-side/--one-after-another",
        help="Train the two chains of roles (CLIP then the base; the rest) at once, or every role in turn.")] = True,
    measure_only: Annotated[bool, typer.Option(
        "--measure-only", help="Train nothing: measure the trained folder again and rewrite its provenance.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train the synth profile's roles from scratch on synth renders (Ray Train, checkpoints);
    run again after an interruption to resume where it stopped."""
    from tasks.profile_roles import RECIPES

    if recipe not in RECIPES:
        fail(f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})", 2)
    from flows.train_profile import train_profile_flow
    from tasks.profile_training import RecipeMismatch

    try:
        report = train_profile_flow(out=str(out), recipe=recipe, seed=seed, name=name, threads=threads,
                                    side_by_side=side_by_side, measure_only=measure_only,
                                    root=state.root, config_file=state.config_path())
    except RecipeMismatch as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(report)
        return
    for record in report["roles"]:
        resumed = f", resumed at step {record['resumed_from']}" if record["resumed_from"] else ""
        console.print(f"{record['role']}: {record['steps']} steps{resumed}")
    console.print(f"profile: [bold]{report['profile']}[/bold] (metrics in provenance.json)")


def generate(
    checkpoint: Annotated[Path, typer.Option(help="A run's exported pipeline directory.")],
    image: Annotated[Path, typer.Option(help="One reference photo of the object.")],
    prompt: Annotated[str, typer.Option(help='Text with "{}" for the object.')],
    out: Annotated[Path, typer.Option(help="Folder for the PNGs and settings.json.")],
    n: Annotated[int, typer.Option(help="Images to generate.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 30,
    noun: Annotated[str | None, typer.Option(help='Class noun that fills "{}", e.g. "square" '
                                              '(default "object").')] = None,
    guidance: Annotated[float | None, typer.Option(min=1.0, help="Text guidance; default: the "
                                                   "profile's (synth 2.0, tiny and sd15 7.5).")] = None,
    object_guidance: Annotated[float | None, typer.Option(min=1.0, help="Object guidance; default: the "
                                                          "profile's (synth 2.0, others 3.0).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Images of the reference's object for a prompt, in one pass (no fine-tuning). The guidance
    defaults are the configured profile's (--config, TAMER_PROFILE), the one the run trained on."""
    _check_pipeline_dir(checkpoint)
    _check_reference(image)
    from model.generate import generate as generate_images
    from model.pipeline import PickleWeightsRefused
    from model.profiles import load_profile

    profile = load_profile(state.config().profile)
    try:
        paths = generate_images(checkpoint, image, prompt, n=n, seed=seed, out_dir=out, steps=steps,
                                guidance_scale=profile.own("guidance_scale", guidance),
                                object_guidance_scale=profile.own("object_guidance_scale", object_guidance),
                                class_noun=noun)
    except PickleWeightsRefused as exc:
        fail(str(exc), 2)
    if as_json:
        print_json([str(p) for p in paths])
        return
    console.print(f"wrote {len(paths)} image(s) to [bold]{out}[/bold]")


def _check_pipeline_dir(path: Path) -> None:
    """A usable checkpoint is a folder whose model_index.json is a JSON object (diffusers')."""
    if not path.is_dir():
        fail(f"checkpoint {path} is not a folder (give a run's exported pipeline directory)", 2)
    index = path / "model_index.json"
    try:
        valid = isinstance(json.loads(index.read_text()), dict)
    except FileNotFoundError:
        fail(f"checkpoint {path} has no model_index.json: not an exported pipeline", 2)
    except (ValueError, OSError):  # empty, not JSON, not text, unreadable
        valid = False
    if not valid:
        fail(f"checkpoint {path}: {index.name} is empty or not a JSON object", 2)


def _check_reference(path: Path) -> None:
    """The reference photo passes the same validation as ingested images (bombs, truncation)."""
    from tamer.reference import BadImage, decode_reference, problem

    if not path.is_file():
        fail(f"image {path} does not exist or is not a file", 2)
    try:
        decode_reference(path.read_bytes(), state.config().ingest)
    except BadImage as exc:
        fail(f"image {path} is not usable: {problem(exc)}", 2)
