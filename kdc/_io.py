"""Atomic file writes and temporary files shared by every stage (standard library only).

Temporary names carry the writer's process id (``.pid<N>.``), so that a later start can remove what a killed
process left behind (:func:`remove_stale_temps`) without touching the temps of a process still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{pid_tag()}", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)  # mkstemp creates 0600; give the file the mode a plain open() would
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


#: The writer's process id inside a temporary name.
PID_TAG = re.compile(r"\.pid(\d+)\.")


def pid_tag() -> str:
    """``.pid<N>.``: the part of a temporary name that names this process."""
    return f".pid{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike[str], pattern: str = ".*.tmp") -> list[Path]:
    """Remove the files and directories matching ``pattern`` in ``directory`` whose name carries the id of a process
    that no longer runs (left by a kill); return them. Names without a process id are left alone."""
    removed = []
    for path in Path(directory).glob(pattern):
        match = PID_TAG.search(path.name)
        if match and not _alive(int(match.group(1))):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; rename it onto ``path`` only if the block succeeds.

    An existing ``path`` is an error unless ``overwrite``; then it is replaced only once the new one is complete.
    Temporary directories of ``path`` left by processes that no longer run are removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent, f".{target.name}.pid*.tmp")
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    tmp = target.parent / f".{target.name}{pid_tag()}tmp"
    old = target.parent / f".{target.name}{pid_tag()}old.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
