import subprocess
import sys

import h5py
import numpy as np
from typer.testing import CliRunner

from kdc.data import build
from kdc.data.cli import data_app


def test_build_command(tmp_path, write_nifti, phantom):
    paths = [write_nifti(tmp_path / f"{n}.nii.gz", np.moveaxis(phantom(6, 20, 16, seed=n), 0, -1)) for n in (1, 2)]
    args = ["build", "--volume", str(paths[0]), "--volume", str(paths[1]), "--height", "16", "--width", "24"]
    args += ["--acc", "5", "--mask-kind", "equispaced", "--out", str(tmp_path / "d")]
    result = CliRunner().invoke(data_app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "(6 train, 6 val slices)" in result.output
    with h5py.File(tmp_path / "d/val/2.h5", "r") as file:
        assert sorted(file) == ["img_volus_5", "kspace_volus_5", "volfs"] and file["volfs"].shape == (16, 24, 6)


def test_user_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "SOURCES", {})
    result = CliRunner().invoke(data_app, ["build", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert result.output.startswith("error: no source volume found") and result.output.count("\n") == 1


def test_import_is_light():
    code = "import sys, kdc.data.cli; print(sorted({'h5py', 'nibabel', 'torch', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
