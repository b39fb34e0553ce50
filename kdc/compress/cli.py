"""``kdc train``, ``kdc distill`` and ``kdc evaluate``; torch is imported only when a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from kdc.errors import KdcError
from kdc.pretrained import resolve

if TYPE_CHECKING:
    from kdc.compress.recipe import RunConfig
    from kdc.data.slices import SliceDataset

Data = Annotated[str, typer.Option(help="Dataset directory (ROOT/train, ROOT/val) or 'demo' for the shipped set.")]
Acc = Annotated[int, typer.Option("--acc", help="Acceleration factor: 4, 5, 8, or any with --center-fraction.")]
CenterFraction = Annotated[
    float | None, typer.Option(help="Fraction of central lines a generated mask samples (default 0.08/0.06/0.04 at "
                                    "4/5/8x).")
]
Crop = Annotated[bool, typer.Option(help="Train and score on fastMRI's central 320x320 of the targets.")]
Out = Annotated[Path, typer.Option(help="Run directory to write checkpoints, metrics.json and train.log to.")]
Epochs = Annotated[int, typer.Option(min=1, help="Epochs per training stage.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Slices per batch.")]
Lr = Annotated[float, typer.Option(help="Adam learning rate.")]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")]
MaskKind = Annotated[str, typer.Option(help="Undersampling mask when the data has none: random or equispaced.")]
Seed = Annotated[int, typer.Option(help="Seed of the weights, data order and mask.")]
LrSchedule = Annotated[str, typer.Option(help="Learning rate over each stage: cosine (decays to 0) or constant.")]
Resume = Annotated[bool, typer.Option(help="Continue an interrupted run in --out after its last finished epoch.")]
Task = Annotated[str, typer.Option(help="recon (DC-CNN reconstruction from k-space), sr (VDSR super-resolution), "
                                        "multicoil (every coil's k-space: kdc's SENSE VarNet, or a user's network "
                                        "such as fastMRI's VarNet) or image (a user's network on the zero-filled "
                                        "image, e.g. fastMRI's Unet).")]
Scale = Annotated[int, typer.Option(help="Super-resolution scale factor (--task sr): 2 or 4.")]
Image = Annotated[str, typer.Option(
    help="magnitude (real images, KD-MRI) or complex (real and imaginary channels, exact complex DC; --task recon).")]
Workers = Annotated[int, typer.Option(
    min=0, help="DataLoader worker processes reading training slices (0: the training process reads them; 2-8 "
                "keep a GPU fed with raw multi-coil data).")]
Augment = Annotated[str, typer.Option(
    help="Augment the training slices: comma-separated flip, rot90, scale, gamma, bias (of the image, the target) "
         "and noise (complex Gaussian in k-space at 20-40 dB SNR, the input only); '' for none.")]
RandomMasks = Annotated[bool, typer.Option(
    help="Undersample every training slice with a new mask each epoch (same kind, acceleration and centre "
         "fraction; fastMRI's way) instead of the one fixed mask; validation keeps the fixed mask.")]
Precision = Annotated[str, typer.Option(
    help="bf16 (convolutions in bfloat16, channels_last; data consistency and losses in float32), fp32, or auto: "
         "bf16 where the CPU (AMX-BF16/AVX512-BF16) or GPU has native bfloat16, else fp32. Recorded in run.json.")]
ValSlices = Annotated[int, typer.Option(
    min=0, help="Validation slices (evenly spaced) scored after every epoch to keep the best; 0: all. The final "
                "table scores them all.")]
Distributed = Annotated[
    bool, typer.Option(help="Data-parallel over the processes of torchrun --nproc-per-node N -m kdc ... (DDP).")
]
UserClass = Annotated[list[str] | None, typer.Option(
    help="MODULE:CLASS of a user's model the run's checkpoints may be rebuilt from (repeatable): importing it runs "
         "that module's code, so a checkpoint alone never does.")]


def _label(config: RunConfig) -> str:
    """``4x`` or ``SR 2x``: the task's short description of a run's settings."""
    import dataclasses

    from kdc.compress.tasks import task_for

    return task_for(dataclasses.asdict(config)).label(dataclasses.asdict(config))


def _print_table(table: dict, title: str) -> None:
    from kdc.compress.evaluate import format_table

    typer.echo(f"\n{title}\n{format_table(table)}")


def train(
    model: Annotated[str, typer.Option(help="Model: teacher or student (of the task).")],
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
    task: Task = "recon",
    scale: Scale = 2,
    image: Image = "magnitude",
    distributed: Distributed = False,
    center_fraction: CenterFraction = None,
    crop: Crop = False,
    workers: Workers = 0,
    augment: Augment = "",
    precision: Precision = "auto",
    random_masks: RandomMasks = False,
    val_slices: ValSlices = 64,
) -> None:
    """Train one model (teacher or student) with L1 to the fully sampled target."""
    from kdc.compress import recipe
    from kdc.compress.distributed import process_group

    if model not in ("teacher", "student"):
        raise KdcError(f"--model {model!r}: expected 'student' or 'teacher'")
    config = recipe.RunConfig(str(data), str(out), acc, epochs, None, batch_size, lr, device, mask_kind=mask_kind,
                              seed=seed, task=task, scale=scale, lr_schedule=lr_schedule,
                              center_fraction=center_fraction, crop=crop, image=image, workers=workers,
                              augment=augment, precision=precision, random_masks=random_masks,
                              val_slices=val_slices)
    with process_group(distributed, recipe.resolve_device(device)) as config.device:  # this rank's device
        table = recipe.train(config, model, resume)
    if table:
        _print_table(table, f"Validation, {_label(config)} ({out})")


def distill(
    data: Data = "demo",
    acc: Acc = 4,
    out: Out = Path("runs/distill"),
    epochs: Epochs = 10,
    pretrain_epochs: Annotated[
        int | None, typer.Option(min=0, help="Epochs of feature pre-training (default: --epochs; 0 skips it).")
    ] = None,
    teacher: Annotated[str | None, typer.Option(
        help="Reuse a trained teacher (a checkpoint or a run directory), or your own class as MODULE:CLASS "
             "(e.g. fastmri.models:VarNet) with --teacher-init and --teacher-weights.")] = None,
    student: Annotated[str | None, typer.Option(
        help="Reuse the trained plain student (baseline; a checkpoint or a run directory), kdc's student preset "
             "by name (--task multicoil: multicoil_student, the default, or multicoil_dccnn), or the student's "
             "class as MODULE:CLASS with --student-init.")] = None,
    teacher_init: Annotated[str, typer.Option(
        help="Constructor arguments of --teacher MODULE:CLASS: a JSON object or a file holding one.")] = "",
    teacher_weights: Annotated[str | None, typer.Option(
        help="State dict of your trained --teacher MODULE:CLASS (loaded with weights_only; a Lightning "
             "checkpoint's 'model.' prefix is stripped); without it the teacher stage trains one.")] = None,
    student_init: Annotated[str, typer.Option(
        help="Constructor arguments of --student MODULE:CLASS: a JSON object or a file holding one.")] = "",
    taps: Annotated[str, typer.Option(
        help="Layers of users' models to distil, TEACHER_PATH=STUDENT_PATH,... by module path (default: the "
             "family's pairs, e.g. VarNet cascades.{2,5,8,11} -> cascades.{0..3}).")] = "",
    method: Annotated[str, typer.Option(help="Feature-distillation loss: at, fitnet, fsp, sp, cc, rkd, pkt.")] = "at",
    imitation_weight: Annotated[float, typer.Option(help="Weight of the imitation loss in the KD stage.")] = 0.5,
    feature_weight: Annotated[float, typer.Option(help="Weight of the feature loss in the KD stage (0: none).")] = 0.0,
    batch_size: BatchSize = 4,
    lr: Lr = 1e-3,
    device: Device = "cpu",
    mask_kind: MaskKind = "random",
    seed: Seed = 0,
    lr_schedule: LrSchedule = "cosine",
    resume: Resume = False,
    task: Task = "recon",
    scale: Scale = 2,
    teacher_cache: Annotated[
        bool, typer.Option(help="Compute the teacher outputs the AT and KD losses need once, in RUN/cache.")
    ] = True,
    image: Image = "magnitude",
    distributed: Distributed = False,
    center_fraction: CenterFraction = None,
    crop: Crop = False,
    teacher_mode: Annotated[str, typer.Option(
        help="How the teacher trains: plain (alone, L1) or sft (SFT-KD-Recon, with student branches).")] = "plain",
    workers: Workers = 0,
    augment: Augment = "",
    precision: Precision = "auto",
    random_masks: RandomMasks = False,
    val_slices: ValSlices = 64,
) -> None:
    """The KD-MRI recipe: teacher -> student alone -> feature-loss (--method) pre-training -> KD student."""
    from kdc.compress import recipe
    from kdc.compress.distributed import process_group

    config = recipe.RunConfig(
        str(data), str(out), acc, epochs, pretrain_epochs, batch_size, lr, device,
        teacher, method, imitation_weight, mask_kind, seed, task, scale, teacher_cache,
        feature_weight=feature_weight, student=student, lr_schedule=lr_schedule, teacher_mode=teacher_mode,
        center_fraction=center_fraction, crop=crop, image=image, workers=workers, augment=augment,
        precision=precision, random_masks=random_masks, val_slices=val_slices, teacher_init=teacher_init,
        student_init=student_init, teacher_weights=teacher_weights, taps=taps,
    )
    with process_group(distributed, recipe.resolve_device(device)) as config.device:  # this rank's device
        table = recipe.distill(config, resume)
    if table:
        _print_table(table, f"Validation, {_label(config)} ({out})")


def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory written by kdc train or kdc distill, or a shipped run "
                                             "pretrained:<run> (kdc pretrained lists them).")],
    data: Annotated[str | None, typer.Option(help="Dataset to score on (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="Split to score: train or val.")] = "val",
    device: Device = "cpu",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON here.")] = None,
    cs: Annotated[bool, typer.Option(
        help="Add compressed sensing (bart pics, l1-wavelet) as a row; skipped with a note without bart.")] = False,
    cs_lambda: Annotated[str, typer.Option(
        help="CS regularisation λ, or auto: the best of a grid on 4 training slices (never on validation).")] = "auto",
    cs_iterations: Annotated[int, typer.Option(min=1, help="CS iterations (bart pics -i).")] = 100,
    mask_seed: Annotated[int | None, typer.Option(
        help="Score on a mask generated with this seed instead of the run's (data without a mask of its own).")] = None,
    mask_kind: Annotated[str | None, typer.Option(
        help="Score on a generated mask of this kind instead of the run's: random, equispaced or random2d.")] = None,
    augment: Annotated[str, typer.Option(
        help="Score on transformed slices, e.g. noise: noisy input k-space, clean targets (--augment of kdc train; "
             "drawn with seed 0, the same slices for every run).")] = "",
    user_class: UserClass = None,
) -> None:
    """Table of the input (zero-filled or low-res), teacher, student and KD student: PSNR, SSIM, NMSE, HFEN ± sd."""
    from kdc._io import write_json
    from kdc.compress.evaluate import evaluate as score_models
    from kdc.compress.recipe import open_run, resolve_device
    from kdc.data.augment import augmenter_of

    overrides = {key: value for key, value in (("seed", mask_seed), ("mask_kind", mask_kind)) if value is not None}
    settings, task, dataset, models = open_run(resolve(run, "run"), data, split, overrides, augmenter_of(augment),
                                               user_class or ())
    if overrides:
        _check_generated_mask(settings, dataset, data)
    models = {task.baseline: None, **models}
    table = score_models(models, dataset, resolve_device(device), task)
    notes = [_cs_row(table, settings, data, dataset, cs_lambda, cs_iterations)] if cs else []
    if json_out:
        write_json(json_out, {"split": split, **task.meta(settings), "augment": augment, "models": table})
    transformed = f", --augment {augment}" if augment else ""
    _print_table(table, f"{split} split{transformed}, {task.label(settings)} ({len(dataset)} slices, {run})")
    for note in notes:
        typer.echo(note)


def _check_generated_mask(settings: dict, dataset: object, data: str | None) -> None:
    """Refuse ``--mask-seed``/``--mask-kind`` where they do not pick the mask scored: another task, or data with a
    mask of its own (``ROOT/masks/mask_{acc}x.npy`` or the mask of its stored k-space), which always wins."""
    from kdc.mri.masks import cartesian_mask

    if settings["task"] != "recon":
        raise KdcError(f"--mask-seed/--mask-kind: a {settings['task']!r} run has no undersampling mask")
    acceleration = settings["acceleration"]
    generated = cartesian_mask(settings["mask_kind"], acceleration, dataset.image_shape, settings["seed"],
                               settings.get("center_fraction"))
    if not np.array_equal(dataset.mask, generated):
        raise KdcError(f"--mask-seed/--mask-kind: {data or settings['data']} has a {acceleration}x mask of its own "
                       f"(masks/mask_{acceleration}x.npy or its stored k-space's), which is what it is scored with")


def _cs_row(table: dict, settings: dict, data: str | None, dataset: SliceDataset, lam: str,
            iterations: int) -> str:
    """Score the CS baseline into ``table`` (λ tuned on the training split for ``auto``), and SENSE-CS too where the
    data has several coils; the lines to print."""
    from kdc.compress.baselines import score_baseline
    from kdc.compress.baselines.bart import BartCompressedSensing, BartSenseCompressedSensing, tune_lambda
    from kdc.compress.tasks import get_task

    if settings["task"] not in ("recon", "multicoil"):
        raise KdcError("--cs: compressed sensing reconstructs undersampled k-space (task recon or multicoil), not "
                       f"task {settings['task']!r}")
    missing = BartCompressedSensing.missing()
    if missing:
        return f"note: no CS row: {missing}"
    if lam != "auto":
        try:
            value = float(lam)
        except ValueError:
            raise KdcError(f"--cs-lambda {lam!r}: expected a number or 'auto'") from None
    coil_items = settings["task"] == "multicoil"  # items hold every coil: SENSE-CS only
    multicoil = coil_items or any(stats.coil_matrix is not None for stats in dataset.stats)
    task = get_task("recon_multicoil" if coil_items else "recon")
    train = task.open_split(data or settings["data"], "train", settings) if lam == "auto" else None
    lines = []
    classes = ([] if coil_items else [BartCompressedSensing]) + ([BartSenseCompressedSensing] if multicoil else [])
    for baseline_class in classes:
        if train is not None:
            baseline = tune_lambda(train, iterations=iterations, baseline=baseline_class)
        else:
            baseline = baseline_class(value, iterations)
        row = table[baseline_class.row] = score_baseline(baseline, dataset)
        if baseline.multicoil:
            tool = "SENSE-CS: bart ecalib -m 1 + pics -R W:7:0:λ"
            target = "; target: RSS of the fully sampled coils (fastMRI's), not the virtual coil"
        else:
            tool, target = "CS: bart pics -l1", ""
        lines.append(f"{tool}, λ = {baseline.lam:g}{' (tuned on the training split)' if lam == 'auto' else ''}, "
                     f"{iterations} iterations, {row['seconds_per_slice']:.2f} s per slice{target}")
    return "\n".join(lines)


def report(
    run: Annotated[Path, typer.Argument(help="Run directory written by kdc distill or kdc train, or pretrained:<run>.")],
    out: Annotated[Path | None, typer.Option(help="PNG to write: reconstructions and residual maps.")] = None,
    slices: Annotated[str | None, typer.Option(
        help="Slices of the split to draw, e.g. 3,10 (default: the two with the most anatomy).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the metrics table here (default: print it).")] = None,
    data: Annotated[str | None, typer.Option(help="Dataset to draw from (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="Split: train or val.")] = "val",
    device: Device = "cpu",
    error_max: Annotated[float, typer.Option(
        help="Top of the residual maps' fixed scale, as a fraction of the volume maximum.")] = 0.1,
    user_class: UserClass = None,
) -> None:
    """KD-MRI's figure (zero-filled, target, teacher, student, KD student, residual maps) and the metrics table."""
    from kdc._io import atomic_path
    from kdc.compress.report import report as make_report

    table = make_report(resolve(run, "run"), out, slices, data, split, device, error_max, user_class or ())
    if markdown is None:
        typer.echo(table)
    else:
        with atomic_path(markdown) as tmp:
            tmp.write_text(table + "\n")
    if out is not None:
        typer.echo(f"wrote {out}")
