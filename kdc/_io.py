"""Atomic file writes, temporary files and output directories shared by every stage (standard library only).

Temporary names carry the writer's process id (``.pid<N>.``), so that a later write in the same directory removes
what a killed process left behind (:func:`remove_stale_temps`) without touching the temps of a process still running.
Every output directory kdc creates holds :data:`OUTPUT_MARKER`; ``overwrite`` replaces only such a directory, and
never one that holds a path the command reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kdc.errors import KdcError

#: The file in every output directory kdc creates, holding the command that wrote it: ``overwrite`` replaces only a
#: directory that holds it.
OUTPUT_MARKER = ".kdc-output"
#: Bytes a file name may have (NAME_MAX of ext4, xfs, btrfs, tmpfs).
NAME_MAX = 255
#: Bytes a temporary name adds to the name it stands for, at most: ``.``, ``.pid<N>.``, 8 random, ``.old.tmp``.
TEMP_ROOM = 40
def printable(value: str | os.PathLike[str]) -> str:
    """``value`` (a path or text) as valid UTF-8 for messages, attributes, manifests and DICOM strings: the bytes of a
    file name that are not UTF-8 (which Python keeps as lone surrogates, unwritable as UTF-8) become ``\\xNN``."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: The writer's process id inside a temporary name.
PID_TAG = re.compile(r"\.pid(\d+)\.")

_swept: set[Path] = set()


class OverwriteError(KdcError):
    """An existing output that must not be replaced: not written by kdc, or holding a path the command reads."""


def fit_name(name: str, limit: int = NAME_MAX) -> str:
    """``name`` if its file-system encoding has at most ``limit`` bytes, else as much of its start as fits beside
    ``-`` and a short hash of the whole name (so that different long names stay different)."""
    encoded = os.fsencode(name)
    if len(encoded) <= limit:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:10]
    head = encoded[:limit - len(digest) - 1]
    while head and head[-1] & 0xC0 == 0x80:  # a UTF-8 character cut in its middle: drop its continuation bytes ...
        head = head[:-1]
    if head and head[-1] >= 0xC0:  # ... and its lead byte
        head = head[:-1]
    return f"{os.fsdecode(head)}-{digest}"


def temp_path(target: Path, kind: str = "") -> Path:
    """The temporary name of this process for ``target`` (``kind`` such as ``old.`` tells several apart)."""
    return target.parent / f".{fit_name(target.name, NAME_MAX - TEMP_ROOM)}{pid_tag()}{kind}tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent)
    prefix = f".{fit_name(target.name, NAME_MAX - TEMP_ROOM)}{pid_tag()}"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
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


def write_results(stem: str | os.PathLike[str], data: Any, markdown: str) -> None:
    """A benchmark's results: ``data`` as ``STEM.json`` (:func:`write_json`) and ``markdown`` as ``STEM.md``, each
    written atomically."""
    stem = Path(stem)
    write_json(stem.with_suffix(".json"), data)
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(markdown)


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
            _remove(path)
            removed.append(path)
    return removed


def sweep(directory: Path) -> None:
    """Remove the kdc temporaries of dead processes in ``directory``, once per process and directory: every write
    cleans up after the killed writes before it, whatever they wrote."""
    key = directory.resolve()
    if key not in _swept:
        _swept.add(key)
        remove_stale_temps(directory)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False, reads: Iterable[Path] = (),
                     mark: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; rename it onto ``path`` only if the block succeeds.

    An existing ``path`` (other than an empty directory) is a FileExistsError unless ``overwrite``; then it is
    replaced once the new one is complete, but never if it holds one of ``reads`` (the command's inputs), and only
    if kdc made it (it holds :data:`OUTPUT_MARKER`), else :class:`OverwriteError`. ``mark`` writes the marker; a
    directory without it (``mark=False``: one inside an output, such as a DICOM series, or package data) is kdc's
    own and replaced without looking for it. Temporaries of dead processes in the parent directory go first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent)
    if target.exists() and not _empty_directory(target):
        if not overwrite:
            raise FileExistsError(target)
        check_replaceable(target, reads, mark)
    tmp, old = temp_path(target), temp_path(target, "old.")
    _remove(tmp)
    tmp.mkdir()
    try:
        if mark:
            (tmp / OUTPUT_MARKER).write_bytes(os.fsencode(f"written by: {_command()}\n"))  # file names as given
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        _remove(tmp)
        _remove(old)


def _remove(path: Path) -> None:
    """Remove the file or directory tree ``path``, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_replaceable(target: Path, reads: Iterable[Path], marked: bool = True) -> None:
    """Raise :class:`OverwriteError` if ``target`` holds one of ``reads``, or if ``marked`` and kdc did not make it
    (it is no directory holding :data:`OUTPUT_MARKER`)."""
    resolved = target.resolve()
    for read in reads:
        where = Path(read).resolve()
        if where == resolved or resolved in where.parents:
            raise OverwriteError(f"{target}: holds {read}, which this command reads; overwriting would delete it: "
                                 "choose another output")
    if marked and not (target.is_dir() and (target / OUTPUT_MARKER).is_file()):
        what = "a directory" if target.is_dir() else "a file"
        raise OverwriteError(f"{target}: {what} kdc did not write (no {OUTPUT_MARKER} in it); overwrite replaces "
                             "only kdc's own outputs: choose another output, or remove it yourself")


def _command() -> str:
    """This process's command line, ``kdc ...`` when it is the kdc CLI."""
    program = Path(sys.argv[0])
    kdc = program.name == "kdc" or program.parts[-2:] == ("kdc", "__main__.py")
    return shlex.join(["kdc" if kdc else program.name, *sys.argv[1:]])


def _empty_directory(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and next(path.iterdir(), None) is None
