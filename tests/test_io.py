"""Atomic writes, the temporary files a killed process leaves behind, and what ``overwrite`` may replace."""

import os
import signal
import subprocess
import sys

import pytest

from kdc._io import (NAME_MAX, OUTPUT_MARKER, OverwriteError, atomic_directory, atomic_path, fit_name, pid_tag,
                     remove_stale_temps)


def killed_writer(target, kind: str = "atomic_path") -> None:
    """A process killed with SIGKILL inside ``atomic_path`` (or ``atomic_directory``) of ``target``, after it wrote
    part of it: its temporary file (directory) stays behind."""
    code = (f"import os, signal; from kdc._io import {kind}\n"
            f"with {kind}({str(target)!r}) as tmp:\n"
            f"    (tmp / 'part' if tmp.is_dir() else tmp).write_bytes(b'half')\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL


def temps(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_stale_temps_of_killed_processes_are_removed_and_live_ones_kept(tmp_path):
    killed_writer(tmp_path / "cache.npy")
    (stale,) = tmp_path.glob(".cache.npy.pid*.tmp")
    legacy = tmp_path / ".cache.npy.abc123.tmp"  # no process id: whose it is cannot be known, so it stays
    legacy.write_bytes(b"")
    with atomic_path(tmp_path / "other.npy") as live:
        live.write_bytes(b"in progress")
        assert remove_stale_temps(tmp_path) == [] and not stale.exists()  # the write itself removed it
        assert live.exists() and legacy.exists() and pid_tag() in live.name
    assert (tmp_path / "other.npy").read_bytes() == b"in progress"


def test_any_later_write_beside_them_removes_what_killed_writers_left(tmp_path):
    """Files and directories of killed writers go at the next write in their directory, whatever it writes; a
    writer still running keeps its temporary."""
    live = subprocess.Popen([sys.executable, "-c", "import time; from kdc._io import atomic_path\n"
                             f"with atomic_path({str(tmp_path / 'live.h5')!r}) as tmp:\n"
                             "    tmp.write_bytes(b'x'); print(flush=True); time.sleep(60)\n"],
                            stdout=subprocess.PIPE)
    try:
        live.stdout.readline()
        (own,) = temps(tmp_path)
        killed_writer(tmp_path / "a.nii.gz")
        (file,) = set(temps(tmp_path)) - {own}
        killed_writer(tmp_path / "out", "atomic_directory")  # its start removed the file left by the first kill
        (directory,) = set(temps(tmp_path)) - {own}
        assert directory.startswith(".out.pid") and (tmp_path / directory / "part").is_file()
        with atomic_path(tmp_path / "metrics.json") as tmp:
            tmp.write_text("{}")
        assert temps(tmp_path) == [own] and file.startswith(".a.nii.gz.pid")
        assert sorted(p.name for p in tmp_path.iterdir()) == [own, "metrics.json"]
    finally:
        live.kill()
        live.wait()


def test_overwrite_replaces_only_what_kdc_wrote_and_never_an_input(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.h5").write_bytes(b"raw")
    with pytest.raises(FileExistsError):
        with atomic_directory(scans):
            pass
    with pytest.raises(OverwriteError, match=r"scans: holds .*a.h5, which this command reads; overwriting would"):
        with atomic_directory(scans, overwrite=True, reads=[scans / "a.h5"]):
            pass
    with pytest.raises(OverwriteError, match=f"scans: a directory kdc did not write \\(no {OUTPUT_MARKER} in it\\)"):
        with atomic_directory(scans, overwrite=True):
            pass
    with pytest.raises(OverwriteError, match="a.h5: a file kdc did not write"):
        with atomic_directory(scans / "a.h5", overwrite=True):
            pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.h5", "scans"]  # nothing touched, nothing left

    out = tmp_path / "out"
    with atomic_directory(out, reads=[scans / "a.h5"]) as tmp:
        (tmp / "old.nii.gz").write_bytes(b"1")
    assert "written by:" in (out / OUTPUT_MARKER).read_text()
    with pytest.raises(OverwriteError, match="which this command reads"):  # kdc's output, now holding an input
        with atomic_directory(out, overwrite=True, reads=[out / "old.nii.gz"]):
            pass
    with atomic_directory(out, overwrite=True, reads=[scans / "a.h5"]) as tmp:
        (tmp / "new.nii.gz").write_bytes(b"2")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "new.nii.gz"] and not temps(tmp_path)
    (tmp_path / "empty").mkdir()
    with atomic_directory(tmp_path / "empty") as tmp:  # an empty directory holds nothing to lose
        (tmp / "x").write_bytes(b"")
    (tmp_path / "own").write_bytes(b"package data")  # unmarked: kdc's own, replaced whole, even a file
    with atomic_directory(tmp_path / "own", overwrite=True, mark=False) as tmp:
        (tmp / "x").write_bytes(b"")
    assert [p.name for p in (tmp_path / "own").iterdir()] == ["x"] and not temps(tmp_path)


def test_long_names_are_cut_to_fit_with_a_hash(tmp_path):
    long = "x" * 300
    assert fit_name("short") == "short" and len(fit_name(long).encode()) == NAME_MAX
    assert fit_name(long) != fit_name(long + "y") and fit_name(long).startswith("x" * 200)
    japanese = fit_name("患" * 100, 100)  # 3 bytes a character: the cut never splits one
    assert len(japanese.encode()) <= 100 and japanese.startswith("患" * 29) and "\ufffd" not in japanese
    undecodable = os.fsdecode(b"\xff" * 300)  # a file name that is not UTF-8
    assert NAME_MAX - 3 <= len(os.fsencode(fit_name(undecodable))) <= NAME_MAX
    name = "y" * (NAME_MAX - 5) + ".h5"  # the longest name a file may have: its temporary name must fit too
    with atomic_path(tmp_path / name) as tmp:
        tmp.write_bytes(b"1")
    with atomic_directory(tmp_path / ("z" * NAME_MAX)) as tmp:
        (tmp / "f").write_bytes(b"2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, "z" * NAME_MAX]


def test_a_killed_export_leaves_no_working_directory_for_the_next(tmp_path, monkeypatch):
    import tempfile

    from kdc.export.api import EXPORT_TEMP_PREFIX, export_model
    from kdc.models import DCCNN
    from kdc.mri.masks import cartesian_mask

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f"{EXPORT_TEMP_PREFIX}.pid{int(dead.stdout)}.x1y2"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"partial")
    killed_writer(tmp_path / "out" / "s.onnx")  # killed while writing the model itself
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the exports' temp dir
    mask = cartesian_mask("random", 4, (24, 24))
    export_model(DCCNN(cascades=1, convs=2, channels=4), tmp_path / "out" / "s.onnx", image_size=(24, 24), mask=mask)
    assert not leftover.exists() and not list(tmp_path.glob(f"{EXPORT_TEMP_PREFIX}*"))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["s.onnx"]
