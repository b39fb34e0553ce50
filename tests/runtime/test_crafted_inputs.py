"""Every crafted file of ``tests/crafted_files.py`` is refused by ``kdc reconstruct`` and ``kdc data prepare`` with
one line naming the file and the field, and files declaring gigabytes cost no memory to refuse."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdc.cli import app
from tests.crafted_files import CRAFTED, FIELDS, fastmri

#: Kinds that declare gigabytes (or terabytes) in a file of at most 1 MB.
DECLARING_GIGABYTES = ("ismrmrd-matrix-16384", "ismrmrd-matrix-8192", "ismrmrd-3e6-acquisitions",
                       "fastmri-kspace-unwritten-1.9GB", "fastmri-multicoil-7GB", "fastmri-multicoil-188GB",
                       "kdmri-gzip-bomb-0.9GB", "npy-header-7.28TiB")
H5_KINDS = [kind for kind in CRAFTED if not kind.startswith("npy")]

REPO = Path(__file__).resolve().parents[2]  # the children import tests.peak_memory
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Callable[[str], Path]:
    """``corpus(kind)``: the crafted file of ``kind``, written on first use (a kind whose tools are missing skips
    alone); ``corpus("valid")``: a fully sampled multi-coil file for ``prepare`` to pair them with."""
    directory = tmp_path_factory.mktemp("crafted")
    files: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in files:
            files[kind] = fastmri(directory / "valid.h5", coils=3) if kind == "valid" else CRAFTED[kind](directory)
        return files[kind]

    return get


def arguments(command: str, path: Path, model: Path, corpus: Callable[[str], Path], out: Path) -> list[str]:
    if command == "reconstruct":
        return ["reconstruct", str(model), str(path), "--out", str(out)]
    return ["data", "prepare", str(path), str(corpus("valid")), "--out", str(out)]


@pytest.mark.parametrize(("command", "kind"), [("reconstruct", kind) for kind in CRAFTED]
                         + [("prepare", kind) for kind in H5_KINDS])
def test_a_crafted_file_is_refused_in_one_line_naming_file_and_field(command, kind, corpus, artefacts, tmp_path):
    path = corpus(kind)
    result = CliRunner().invoke(app, arguments(command, path, artefacts.student_onnx, corpus, tmp_path / "out"))
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr
    assert FIELDS[kind] in lines[0]
    assert not (tmp_path / "out").exists()


CHILD = """
import json, sys
from typer.testing import CliRunner
from kdc.cli import app
from tests.peak_memory import peak_mb
runs = [CliRunner().invoke(app, arguments) for arguments in json.loads(sys.argv[1])]
print(json.dumps({"codes": [run.exit_code for run in runs], "errors": [run.stderr for run in runs],
                  "peak_mb": peak_mb()}))
"""


def test_files_declaring_gigabytes_are_refused_without_allocating(corpus, artefacts, tmp_path):
    """One child process refuses each of them with both commands. Its peak RSS stays near what importing kdc,
    h5py and onnxruntime costs (~170 MB), far below the smallest declared size (0.9 GB); the child's address space
    is capped at 2 GiB so that a reader allocating what a file declares fails here rather than loading the machine.
    Before: 2.8 to 6.7 GB each, or a MemoryError traceback."""
    runs = [arguments(command, corpus(kind), artefacts.student_onnx, corpus, tmp_path / "out")
            for kind in DECLARING_GIGABYTES for command in ("reconstruct", "prepare") if not kind.startswith("npy")]
    runs.append(arguments("reconstruct", corpus("npy-header-7.28TiB"), artefacts.student_onnx, corpus,
                          tmp_path / "out"))

    def cap_address_space() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(runs)], capture_output=True, text=True, cwd=REPO,
                           preexec_fn=cap_address_space, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["codes"] == [1] * len(runs), report["errors"]
    assert all(error.startswith("error: ") and error.count("\n") == 1 for error in report["errors"]), report["errors"]
    assert report["peak_mb"] < 600, report


def test_a_file_name_that_is_not_utf8_is_read_and_written(artefacts, tmp_path):
    """Python keeps such names as lone surrogates, which h5py attributes and UTF-8 text cannot hold."""
    odd = tmp_path / os.fsdecode(b"scan\xff")
    odd.mkdir()
    fastmri(odd / os.fsdecode(b"a\xff.h5"))
    fastmri(odd / "b.h5")
    result = CliRunner().invoke(app, ["reconstruct", str(artefacts.student_onnx), str(odd / os.fsdecode(b"a\xff.h5")),
                                      "--acc", "4", "-f", "h5", "--out", str(tmp_path / "images")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "images" / os.fsdecode(b"a\xff.h5")).is_file()
    result = CliRunner().invoke(app, ["data", "prepare", str(odd), "--out", str(tmp_path / "prepared")])
    assert result.exit_code == 0, result.output
    assert "train a\\xff.h5: 2 slices" in result.stdout


def test_a_refused_file_gets_its_error_without_the_readers_notices(artefacts, tmp_path):
    """The reader says it reads repetition 0 only, of 4, once the file is read; a file it refuses (here after
    placing the repetitions: no coils) gets its one line alone."""
    from tests.crafted_files import edit_heads
    from tests.ismrmrd_files import generate

    path = generate(tmp_path / "reps.h5", "-m", "32", "-c", "2", "-a", "1", "-r", "4")
    edit_heads(path, lambda heads: heads.__setitem__("active_channels", 0))
    result = CliRunner().invoke(app, ["reconstruct", str(artefacts.student_onnx), str(path), "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"error: {path}: 'dataset/data' active_channels is [0]: expected one coil count above 0"]
