"""``kdc data``: build datasets. Heavy imports (nibabel, h5py) happen only when a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdc._cli import user_errors

data_app = typer.Typer(no_args_is_help=True)


@data_app.callback()
def data() -> None:
    """Build MRI datasets in the KD-MRI h5 layout (a group, so that ``build`` stays a subcommand)."""


@data_app.command("build")
@user_errors
def build(
    out: Annotated[Path, typer.Option(help="Dataset directory to write (ROOT/train, ROOT/val, ROOT/masks).")],
    volume: Annotated[Optional[list[Path]], typer.Option(help="A NIfTI volume to include (repeatable).")] = None,
    source: Annotated[
        Optional[list[str]],
        typer.Option(help="A named installed volume: mni2009a, mni152, colin27 (repeatable; default: all found)."),
    ] = None,
    val_volumes: Annotated[int, typer.Option(help="The last N volumes go to val (split by volume).")] = 1,
    size: Annotated[int, typer.Option(help="Square image size, unless --height/--width are given.")] = 256,
    height: Annotated[Optional[int], typer.Option(help="Image height (default: --size).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Image width (default: --size).")] = None,
    acc: Annotated[Optional[list[int]], typer.Option(help="Acceleration (repeatable; default 4 5 8).")] = None,
    mask_kind: Annotated[str, typer.Option(help="Undersampling mask: random or equispaced.")] = "random",
    seed: Annotated[int, typer.Option(help="Seed of the masks.")] = 0,
    min_foreground: Annotated[float, typer.Option(help="Drop slices with less foreground than this.")] = 0.15,
    axis: Annotated[str, typer.Option(help="Slice axis: axial, coronal or sagittal.")] = "axial",
    train_axis: Annotated[
        Optional[list[str]],
        typer.Option(help="Slice the training volumes along this axis (repeatable; default: --axis); each axis "
                          "writes one file per volume, e.g. all three for 3x the training slices."),
    ] = None,
    slices_per_volume: Annotated[
        Optional[int], typer.Option(min=1, help="Keep this many evenly spaced slices per volume (default: all).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="Storage type of the images: float32 or float16.")] = "float32",
    targets_only: Annotated[
        bool, typer.Option(help="Write only volfs, no masks or k-space: readers then simulate both.")
    ] = False,
    center_fraction: Annotated[
        Optional[float], typer.Option(help="Fraction of central lines always sampled (default: 0.08/0.06/0.04 at "
                                           "4/5/8x; needed for other accelerations).")
    ] = None,
    complex_images: Annotated[
        bool, typer.Option("--complex", help="Simulate complex images (smooth random phase); writes fastMRI files.")
    ] = False,
    coils: Annotated[
        int, typer.Option(min=1, help="Simulate this many birdcage coils; more than 1 writes fastMRI multi-coil files.")
    ] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Slice real NIfTI brain volumes into a KD-MRI h5 dataset with simulated, undersampled k-space."""
    from kdc.data.build import BuildSettings, build_dataset, resolve_inputs

    settings = BuildSettings(
        shape=(height or size, width or size),
        accelerations=tuple(acc or (4, 5, 8)),
        mask_kind=mask_kind,  # type: ignore[arg-type]
        seed=seed,
        val_volumes=val_volumes,
        min_foreground=min_foreground,
        axis=axis,
        train_axes=tuple(train_axis) if train_axis else None,
        slices_per_volume=slices_per_volume,
        dtype=dtype,
        targets_only=targets_only,
        center_fraction=center_fraction,
        complex_images=complex_images,
        coils=coils,
    )
    manifest = build_dataset(out, resolve_inputs(source or [], volume or []), settings, overwrite)
    for record in manifest["volumes"]:
        typer.echo(f"{record['split']:5} {record['file']}: {record['slices']} slices")
    typer.echo(f"wrote {out} ({manifest['slices']['train']} train, {manifest['slices']['val']} val slices)")


@data_app.command("prepare")
@user_errors
def prepare(
    raw: Annotated[list[Path], typer.Argument(help="Raw h5 files (fastMRI multi-coil, ISMRMRD) or directories of them.")],
    out: Annotated[Path, typer.Option(help="Dataset directory to write (ROOT/train, ROOT/val).")],
    val_volumes: Annotated[int, typer.Option(help="The last N files go to val (split by volume).")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Coil-compress fully sampled raw multi-coil k-space to one virtual coil per volume: a training dataset as
    fastMRI single-coil files, the coil count times smaller, that trains like the raw files."""
    from kdc.data.prepare import prepare_dataset

    manifest = prepare_dataset(raw, out, val_volumes, overwrite)
    for record in manifest["volumes"]:
        typer.echo(f"{record['split']:5} {record['file']}: {record['slices']} slices, {record['coils']} coil(s) -> 1")
    typer.echo(f"wrote {out} ({manifest['slices']['train']} train, {manifest['slices']['val']} val slices)")
