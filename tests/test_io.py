"""Atomic writes and the temporary files a killed process leaves behind."""

import signal
import subprocess
import sys

from kdc._io import atomic_path, pid_tag, remove_stale_temps


def killed_writer(directory) -> None:
    """A process killed with SIGKILL inside ``atomic_path``: its temp file stays behind."""
    code = (f"import os, signal; from kdc._io import atomic_path\n"
            f"with atomic_path({str(directory / 'cache.npy')!r}) as tmp:\n"
            f"    tmp.write_bytes(b'half')\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL


def test_stale_temps_of_killed_processes_are_removed_and_live_ones_kept(tmp_path):
    killed_writer(tmp_path)
    (stale,) = tmp_path.glob(".cache.npy.pid*.tmp")
    legacy = tmp_path / ".cache.npy.abc123.tmp"  # no process id: whose it is cannot be known, so it stays
    legacy.write_bytes(b"")
    with atomic_path(tmp_path / "other.npy") as live:
        live.write_bytes(b"in progress")
        assert remove_stale_temps(tmp_path) == [stale]
        assert live.exists() and legacy.exists() and pid_tag() in live.name
    assert (tmp_path / "other.npy").read_bytes() == b"in progress"


def test_a_killed_export_leaves_no_working_directory_for_the_next(tmp_path, monkeypatch):
    import tempfile

    from kdc.export.api import EXPORT_TEMP_PREFIX, export_model
    from kdc.models import DCCNN
    from kdc.mri.masks import cartesian_mask

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f"{EXPORT_TEMP_PREFIX}.pid{int(dead.stdout)}.x1y2"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"partial")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the exports' temp dir
    mask = cartesian_mask("random", 4, (24, 24))
    export_model(DCCNN(cascades=1, convs=2, channels=4), tmp_path / "out" / "s.onnx", image_size=(24, 24), mask=mask)
    assert not leftover.exists() and not list(tmp_path.glob(f"{EXPORT_TEMP_PREFIX}*"))
