"""``kdc report``: the KD-MRI figure as a PNG of the expected size, the table, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kdc.compress.recipe import RunConfig
from kdc.compress.report import anatomy_slices, figure_pixels, report
from kdc.errors import KdcError
from kdc.models import build_model, save_checkpoint
from tests.conftest import make_phantom

SHAPE = (32, 32)


@pytest.fixture
def run(tmp_path, write_kdmri):
    """A run directory as ``kdc distill`` leaves it (untrained weights: the figure does not depend on training)."""
    data = tmp_path / "data"
    write_kdmri(data / "train" / "a.h5", make_phantom(3, *SHAPE, seed=0))
    write_kdmri(data / "val" / "b.h5", make_phantom(5, *SHAPE, seed=1))
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(dataclasses.asdict(RunConfig(str(data), str(run), 4))))
    for role, preset in (("teacher", "teacher"), ("student", "student"), ("kd_student", "student")):
        save_checkpoint(run / f"{role}.pt", build_model(preset), {"role": role})
    return run


def test_figure_has_one_column_per_model_and_two_rows_per_slice(run, tmp_path):
    out = tmp_path / "figs" / "report.png"
    table = report(run, out, "0,4")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == figure_pixels(5, 2)
    assert figure_pixels(5, 2)[1] == 2 * figure_pixels(5, 1)[1]
    assert not list(out.parent.glob("*.tmp"))
    for row in ("| zero-filled | 0 |", "| teacher | 141,765 |", "| student | 49,285 |", "| kd_student | 49,285 |"):
        assert row in table


def test_bad_slices_leave_an_existing_png_untouched(run, tmp_path):
    out = tmp_path / "report.png"
    out.write_bytes(b"old")
    for slices in ("5", "1,x", "-1"):
        with pytest.raises(KdcError, match="--slices"):
            report(run, out, slices)
    assert out.read_bytes() == b"old"


def test_cli_writes_markdown_and_refuses_a_bad_run_in_one_line(run, tmp_path):
    kdc = [sys.executable, "-m", "kdc", "report"]
    markdown = tmp_path / "table.md"
    done = subprocess.run([*kdc, str(run), "--slices", "2", "--markdown", str(markdown)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| kd_student | 49,285 |" in markdown.read_text()

    bad = subprocess.run([*kdc, str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")], capture_output=True,
                         text=True, timeout=300)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "run.json" in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_table_is_read_from_metrics_json_for_the_runs_own_val_split(run):
    metric = {"mean": 1.0, "sd": 0.0, "n": 5}
    rows = {row: {"params": 7, "psnr": metric, "ssim": metric, "nmse": metric, "hfen": metric}
            for row in ("zero-filled", "teacher", "student", "kd_student")}
    (run / "metrics.json").write_text(json.dumps({"split": "val", "acceleration": 4, "models": rows}))
    assert "| teacher | 7 | 1.00 ± 0.00 |" in report(run, None)
    assert "| teacher | 141,765 |" in report(run, None, split="train")  # another split is scored afresh


def test_default_slices_are_those_with_the_most_anatomy():
    """Evenly spaced picks land on the neck (little foreground); the default takes the fullest slice of each half."""
    sizes = [0, 2, 9, 5, 1, 3, 12, 4]  # side of a square of foreground per slice
    dataset = [{"target": np.pad(np.ones((1, n, n)), ((0, 0), (0, 16 - n), (0, 16 - n)))} for n in sizes]
    assert anatomy_slices(dataset) == [2, 6]
    assert anatomy_slices(dataset[:1]) == [0]


def test_residual_maps_use_the_stated_fixed_scale(run, tmp_path):
    """Same slices, another --error-max: only the residual rows and the colour bar change."""
    fixed, wider = tmp_path / "a.png", tmp_path / "b.png"
    report(run, fixed, "1")
    report(run, wider, "1", error_max=0.5)
    with Image.open(fixed) as a, Image.open(wider) as b:
        top, bottom = np.asarray(a, float), np.asarray(b, float)
    half = top.shape[0] // 2
    assert np.abs(top[half:] - bottom[half:]).mean() > 1.0
    with pytest.raises(KdcError, match="--error-max 0"):
        report(run, tmp_path / "c.png", "1", error_max=0)
