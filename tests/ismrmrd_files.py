"""Real ISMRMRD files, written by Debian's ismrmrd-tools (not by kdc), for the data and runtime tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import pytest

GENERATE = "ismrmrd_generate_cartesian_shepp_logan"
RECON = "ismrmrd_recon_cartesian_2d"


def generate(path: Path, *options: str, tools: tuple[str, ...] = (GENERATE,)) -> Path:
    """``ismrmrd_generate_cartesian_shepp_logan OPTIONS -o path``; skip the test where the tools are missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{'/'.join(missing)} not found: install Debian's ismrmrd-tools (make test does, where apt exists)")
    subprocess.run([GENERATE, *options, "-o", str(path)], check=True, capture_output=True)
    return path


def orient(path: Path, position: tuple, read_dir: tuple, phase_dir: tuple) -> None:
    """Give every readout of an ISMRMRD file a position and orientation, as a scanner writes them."""
    with h5py.File(path, "r+") as file:
        data = file["dataset/data"]
        rows = data[()]
        rows["head"]["position"], rows["head"]["read_dir"], rows["head"]["phase_dir"] = position, read_dir, phase_dir
        data[...] = rows


def edit_header(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in the file's XML header."""
    with h5py.File(path, "r+") as file:
        xml = file["dataset/xml"][0].decode()
        assert old in xml
        file["dataset/xml"][0] = xml.replace(old, new).encode()


def slices_from_repetitions(path: Path) -> None:
    """Make each repetition of a ``-r N`` file a slice of its own: an N-slice 2-D scan."""
    with h5py.File(path, "r+") as file:
        data = file["dataset/data"]
        rows = data[()]
        counters = rows["head"]["idx"]
        counters["slice"], counters["repetition"] = counters["repetition"], 0
        data[...] = rows
