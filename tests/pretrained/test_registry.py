"""The shipped pretrained models: their names, files, listing and packaging (real files, real subprocesses)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from kdc.errors import KdcError
from kdc.models import load_checkpoint
from kdc.pretrained import DIRECTORY, MAX_CHECKPOINT_BYTES, ROLES, index, known_names, resolve
from tests.runtime.helpers import BLOCK_TORCH
from tests.test_cli import assert_user_error, kdc

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_run_ships_with_every_model():
    assert "demo-4x" in index()
    names = known_names()
    start = names.index("pretrained:demo-4x")  # each run, then its models in role order
    assert names[start:start + 4] == ["pretrained:demo-4x", "pretrained:demo-4x-teacher",
                                      "pretrained:demo-4x-student", "pretrained:demo-4x-kd"]


@pytest.mark.parametrize("run", list(index()))
def test_every_name_resolves_to_its_files(run):
    directory = DIRECTORY / run
    assert resolve(f"pretrained:{run}", "run") == directory
    assert resolve(f"pretrained:{run}", "checkpoint") == directory  # export picks the run's KD student
    for role, stem in ROLES.items():
        assert resolve(f"pretrained:{run}-{role}", "checkpoint") == directory / f"{stem}.pt"
        assert resolve(f"pretrained:{run}-{role}", "onnx") == directory / f"{stem}.onnx"
    assert (directory / "PROVENANCE.md").is_file() and (directory / "train.log").is_file()
    assert resolve("runs/demo", "run") == Path("runs/demo")  # anything else is a path, untouched


@pytest.mark.parametrize("run", list(index()))
def test_shipped_checkpoints_are_small_and_load_weights_only(run):
    for stem in ROLES.values():
        path = DIRECTORY / run / f"{stem}.pt"
        assert path.stat().st_size < MAX_CHECKPOINT_BYTES
        torch.load(path, weights_only=True)  # raises on anything but tensors and plain containers
        model, meta = load_checkpoint(path)
        assert meta["role"] == stem and list(meta["image_size"]) == index()[run]["image_size"]


def test_a_model_name_where_a_run_is_taken_and_the_reverse():
    with pytest.raises(KdcError, match="one model; this command takes a run: pretrained:demo-4x$"):
        resolve("pretrained:demo-4x-kd", "run")
    with pytest.raises(KdcError, match="is a run: name one of its models .*pretrained:demo-4x-kd"):
        resolve("pretrained:demo-4x", "onnx")


def test_unknown_names_are_one_line_errors_listing_the_known_ones(tmp_path):
    for command in (["export", "pretrained:brain-9x-kd", "--out", str(tmp_path / "x.onnx")],
                    ["evaluate", "pretrained:brain-9x"],
                    ["bench", "pretrained:demo-4x-tutor"],
                    ["reconstruct", "pretrained:nope", str(tmp_path / "in.npy"), "--out", str(tmp_path / "out")]):
        assert_user_error(kdc(*command, check=False), "unknown pretrained model", "pretrained:demo-4x-kd")
    assert_user_error(kdc("evaluate", "pretrained:demo-4x-kd", check=False), "takes a run: pretrained:demo-4x")
    assert not any(tmp_path.iterdir())


def test_kdc_pretrained_lists_the_models_with_their_validation_metrics(tmp_path):
    result = kdc("pretrained", "--json", str(tmp_path / "rows.json"))
    rows = json.loads((tmp_path / "rows.json").read_text())
    metrics = json.loads((DIRECTORY / "demo-4x" / "metrics.json").read_text())["models"]
    demo = {row["role"]: row for row in rows if row["run"] == "demo-4x"}
    assert set(demo) == set(ROLES)
    for role, stem in ROLES.items():
        row = demo[role]
        assert row["psnr"] == metrics[stem]["psnr"]["mean"] and row["params"] == metrics[stem]["params"]
        assert row["image_size"] == [128, 128] and row["acceleration"] == 4
        assert f"| {row['name']} | {role} | 128x128 | 4x | {row['params']:,} |" in result.stdout
        assert f"| {row['psnr']:.2f} | {row['ssim']:.4f} | {row['provenance']} |" in result.stdout
    assert Path(demo["kd"]["provenance"]).is_file()


def test_the_runtime_path_imports_no_torch(tmp_path):
    """Resolving, listing, loading the shipped ONNX and ``kdc bench`` on a name, where importing torch fails."""
    code = BLOCK_TORCH + f"""
import numpy as np, typer
from typer.testing import CliRunner
import kdc.runtime
from kdc._cli import user_errors
from kdc.pretrained import listing, resolve
from kdc.pretrained.cli import pretrained
from kdc.runtime.cli import bench
assert len(listing()) >= 3
model = kdc.runtime.load(resolve("pretrained:demo-4x-kd", "onnx"), threads=1)
image = model.run(model.example_feeds(1))["image"]
assert np.isfinite(image).all()
app = typer.Typer()
app.command("bench")(user_errors(bench))
app.command("pretrained")(user_errors(pretrained))
result = CliRunner().invoke(app, ["bench", "pretrained:demo-4x-kd", "-n", "2", "--warmup", "0", "--json",
                                  {str(tmp_path / 'bench.json')!r}])
assert result.exit_code == 0, result.output
assert CliRunner().invoke(app, ["pretrained"]).exit_code == 0
assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["role"] == "kd_student"


def test_the_wheel_contains_every_shipped_file(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ and egg-info there
    shutil.copytree(REPO / "kdc", source / "kdc", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                             "--quiet", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "No module named pip" in result.stderr:
        pytest.skip("this Python has no pip to build the wheel with")
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheel").glob("kdc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(path.relative_to(REPO)) for path in DIRECTORY.rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert "kdc/pretrained/index.json" in shipped and "kdc/pretrained/demo-4x/kd_student.onnx" in shipped
    assert shipped <= names, sorted(shipped - names)
