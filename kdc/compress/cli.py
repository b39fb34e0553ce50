"""``kdc train``, ``kdc distill`` and ``kdc evaluate``; torch is imported only when a command runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kdc.errors import KdcError

Data = Annotated[str, typer.Option(help="Dataset directory (ROOT/train, ROOT/val) or 'demo' for the shipped set.")]
Acc = Annotated[int, typer.Option("--acc", help="Acceleration factor: 4, 5 or 8.")]
Out = Annotated[Path, typer.Option(help="Run directory to write checkpoints, metrics.json and train.log to.")]
Epochs = Annotated[int, typer.Option(min=1, help="Epochs per training stage.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Slices per batch.")]
Lr = Annotated[float, typer.Option(help="Adam learning rate.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")]
MaskKind = Annotated[str, typer.Option(help="Undersampling mask when the data has none: random or equispaced.")]
Seed = Annotated[int, typer.Option(help="Seed of the weights, data order and mask.")]
LrSchedule = Annotated[str, typer.Option(help="Learning rate over each stage: cosine (decays to 0) or constant.")]
Resume = Annotated[bool, typer.Option(help="Continue an interrupted run in --out after its last finished epoch.")]


def _print_table(table: dict, title: str) -> None:
    from kdc.compress.evaluate import format_table

    typer.echo(f"\n{title}\n{format_table(table)}")


def train(
    model: Annotated[str, typer.Option(help="Model preset: teacher or student.")],
    data: Data = "demo",
    acc: Acc = 4,
    out: Out = Path("runs/train"),
    epochs: Epochs = 10,
    batch_size: BatchSize = 4,
    lr: Lr = 1e-3,
    device: Device = "cpu",
    mask_kind: MaskKind = "random",
    seed: Seed = 0,
    lr_schedule: LrSchedule = "cosine",
    resume: Resume = False,
) -> None:
    """Train one model (teacher or student) with L1 to the fully sampled target."""
    from kdc.compress import recipe
    from kdc.models.checkpoint import PRESETS

    if model not in PRESETS:
        raise KdcError(f"--model {model!r}: expected one of {sorted(PRESETS)}")
    config = recipe.RunConfig(
        str(data), str(out), acc, epochs, None, batch_size, lr, device, mask_kind=mask_kind, seed=seed,
        lr_schedule=lr_schedule,
    )
    _print_table(recipe.train(config, model, resume), f"Validation, {acc}x ({out})")


def distill(
    data: Data = "demo",
    acc: Acc = 4,
    out: Out = Path("runs/distill"),
    epochs: Epochs = 10,
    pretrain_epochs: Annotated[int | None, typer.Option(help="Epochs of feature pre-training (default: --epochs).")] = None,
    teacher: Annotated[str | None, typer.Option(help="Reuse a trained teacher: a checkpoint or a run directory.")] = None,
    method: Annotated[str, typer.Option(help="Feature-distillation loss of the pre-training stage.")] = "at",
    imitation_weight: Annotated[float, typer.Option(help="Weight of the imitation loss in the KD stage.")] = 0.5,
    batch_size: BatchSize = 4,
    lr: Lr = 1e-3,
    device: Device = "cpu",
    mask_kind: MaskKind = "random",
    seed: Seed = 0,
    lr_schedule: LrSchedule = "cosine",
    resume: Resume = False,
) -> None:
    """The KD-MRI recipe: teacher -> student alone -> attention-transfer pre-training -> KD student."""
    from kdc.compress import recipe

    config = recipe.RunConfig(
        str(data), str(out), acc, epochs, pretrain_epochs, batch_size, lr, device,
        teacher, method, imitation_weight, mask_kind, seed, lr_schedule,
    )
    _print_table(recipe.distill(config, resume), f"Validation, {acc}x ({out})")


def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory written by kdc train or kdc distill.")],
    data: Annotated[str | None, typer.Option(help="Dataset to score on (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="Split to score: train or val.")] = "val",
    device: Device = "cpu",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON here.")] = None,
) -> None:
    """Table of zero-filled, teacher, student and KD student on a split: PSNR, SSIM, NMSE, HFEN ± sd."""
    from kdc._io import write_json
    from kdc.compress.evaluate import evaluate as score_models
    from kdc.compress.recipe import TABLE_ROLES, resolve_device
    from kdc.data.slices import open_split
    from kdc.models.checkpoint import load_checkpoint

    settings_path = run / "run.json"
    if not settings_path.is_file():
        raise KdcError(f"{run}: not a run directory (no run.json)")
    settings = json.loads(settings_path.read_text())
    dataset = open_split(data or settings["data"], split, settings["acceleration"], settings["mask_kind"], settings["seed"])
    models = {"zero-filled": None}
    models.update({role: load_checkpoint(run / f"{role}.pt")[0] for role in TABLE_ROLES if (run / f"{role}.pt").exists()})
    table = score_models(models, dataset, resolve_device(device))
    if json_out:
        write_json(json_out, {"split": split, "acceleration": settings["acceleration"], "models": table})
    _print_table(table, f"{split} split, {settings['acceleration']}x ({len(dataset)} slices, {run})")


def report(
    run: Annotated[Path, typer.Argument(help="Run directory written by kdc distill or kdc train.")],
    out: Annotated[Path | None, typer.Option(help="PNG to write: reconstructions and residual maps.")] = None,
    slices: Annotated[str | None, typer.Option(help="Slices of the split to draw, e.g. 3,10 (default: two).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the metrics table here (default: print it).")] = None,
    data: Annotated[str | None, typer.Option(help="Dataset to draw from (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="Split: train or val.")] = "val",
    device: Device = "cpu",
) -> None:
    """KD-MRI's figure (zero-filled, target, teacher, student, KD student, residual maps) and the metrics table."""
    from kdc._io import atomic_path
    from kdc.compress.report import report as make_report

    table = make_report(run, out, slices, data, split, device)
    if markdown is None:
        typer.echo(table)
    else:
        with atomic_path(markdown) as tmp:
            tmp.write_text(table + "\n")
    if out is not None:
        typer.echo(f"wrote {out}")
