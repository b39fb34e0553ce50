"""``kdc data prepare`` and ``kdc data build`` outputs: ``--overwrite`` never deletes an input or a directory kdc did
not write, and a prepare killed with SIGKILL leaves nothing once another one has run beside it."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from kdc._io import OverwriteError
from kdc.data.build import VolumeInput, build_dataset
from kdc.data.cli import data_app
from tests.data.test_build import SMALL
from tests.data.test_slices import multicoil_volume


def prepare(*args):
    return CliRunner().invoke(data_app, ["prepare", *map(str, args)])


def files(directory):
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


def test_overwrite_never_deletes_the_raw_files(tmp_path, write_fastmri_multicoil):
    raw = tmp_path / "raw"
    for name in ("a", "b"):
        write_fastmri_multicoil(raw / f"{name}.h5", multicoil_volume(slices=2, coils=4))
    (raw / "notes.txt").write_text("mine")
    before = files(tmp_path)
    result = prepare(raw, "--out", raw, "--overwrite")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "raw: holds" in result.output and "which this command reads" in result.output
    result = prepare(raw, "--out", tmp_path, "--overwrite")  # a directory above the inputs
    assert result.exit_code == 1 and "which this command reads" in result.output
    assert files(tmp_path) == before

    assert prepare(raw, "--out", tmp_path / "prepared").exit_code == 0
    assert prepare(raw, "--out", tmp_path / "prepared", "--overwrite").exit_code == 0  # kdc's own: replaced
    (tmp_path / "prepared" / ".kdc-output").unlink()  # as a dataset made by hand
    result = prepare(raw, "--out", tmp_path / "prepared", "--overwrite")
    assert result.exit_code == 1 and "a directory kdc did not write" in result.output


def test_build_overwrite_keeps_its_volumes(tmp_path, write_nifti):
    (tmp_path / "in").mkdir()
    volumes = [VolumeInput(name, write_nifti(tmp_path / "in" / f"{name}.nii.gz", np.ones((24, 24, 4), np.float32)))
               for name in ("a", "b")]
    before = files(tmp_path)
    with pytest.raises(OverwriteError, match="in: holds .*a.nii.gz, which this command reads"):
        build_dataset(tmp_path / "in", volumes, SMALL, overwrite=True, progress=False)
    assert files(tmp_path) == before


def test_a_killed_prepare_leaves_nothing_once_another_runs_beside_it(tmp_path, write_fastmri_multicoil):
    raw = tmp_path / "raw"
    for name in ("a", "b"):
        write_fastmri_multicoil(raw / f"{name}.h5", multicoil_volume(slices=24, coils=8, shape=(64, 64)))
    code = "import sys\nfrom kdc.cli import app\nsys.argv[0] = 'kdc'\napp()\n"
    process = subprocess.Popen([sys.executable, "-c", code, "data", "prepare", str(raw), "--out",
                                str(tmp_path / "first")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while process.poll() is None and not list(tmp_path.glob(".first*")):
        time.sleep(0.001)
    process.kill()
    assert process.wait() == -signal.SIGKILL, process.stderr.read()
    assert [p.name for p in tmp_path.glob(".first*")] == [f".first.pid{process.pid}.tmp"]
    assert prepare(raw, "--out", tmp_path / "second").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "second"]
