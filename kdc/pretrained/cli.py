"""``kdc pretrained``: the shipped models with their validation metrics (no torch, no runtime imported)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdc.pretrained import listing


def pretrained(
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON here.")] = None,
) -> None:
    """List the pretrained models (pretrained:<run>-<role>) with their validation PSNR/SSIM and provenance."""
    from kdc._io import write_json

    rows = listing()
    if not rows:
        typer.echo("no pretrained models ship with this install")
        return
    lines = ["| name | role | image | acc | params | .pt | .onnx | val PSNR (dB) | val SSIM | provenance |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['role']} | {'x'.join(map(str, row['image_size']))} | {row['acceleration']}x "
            f"| {row['params']:,} | {row['checkpoint_bytes'] / 1e3:.0f} kB | {row['onnx_bytes'] / 1e3:.0f} kB "
            f"| {row['psnr']:.2f} | {row['ssim']:.4f} | {row['provenance']} |"
        )
    typer.echo("\n".join(lines))
    for run, description in dict.fromkeys((row["run"], row["description"]) for row in rows):
        typer.echo(f"\npretrained:{run}: {description}")
    typer.echo("\nkdc evaluate pretrained:<run>; kdc export / bench / reconstruct pretrained:<run>-<role>")
    if json_out is not None:
        write_json(json_out, rows)
