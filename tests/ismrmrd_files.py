"""Real ISMRMRD files, written by Debian's ismrmrd-tools (not by kdc), for the data and runtime tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
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


def rewrite_readouts(path: Path, change) -> None:
    """Replace every acquisition record ``row`` of the file by ``change(row)``: a record (header and samples may
    change), a list of records, or None to drop it."""
    with h5py.File(path, "r+") as file:
        rows = file["dataset/data"][()]
        dtype = file["dataset/data"].dtype
        changed = (change(row.copy()) for row in rows)
        kept = [item for result in changed if result is not None
                for item in (result if isinstance(result, list) else [result])]
        del file["dataset/data"]
        file.create_dataset("dataset/data", data=np.array(kept, dtype=dtype), maxshape=(None,))


def samples(row) -> np.ndarray:
    """``(channels, samples)`` complex64 samples of one acquisition record."""
    head = row["head"]
    return row["data"].view(np.complex64).reshape(int(head["active_channels"]), int(head["number_of_samples"]))


def set_samples(row, values: np.ndarray) -> None:
    row["data"] = np.ascontiguousarray(values, dtype=np.complex64).reshape(-1).view(np.float32)
    row["head"]["number_of_samples"] = values.shape[-1]


def phase_partial_fourier(path: Path, first_line: int) -> None:
    """Keep only phase encodes ``first_line`` and above (``ismrmrd_generate_cartesian_shepp_logan`` numbers them
    from 0 with the centre at matrix/2) and say so in the header's encodingLimits, as a partial Fourier scan does."""
    rewrite_readouts(path, lambda row: row if is_noise(row) or row["head"]["idx"]["kspace_encode_step_1"] >= first_line
                     else None)
    edit_header(path, "<kspace_encoding_step_1>\n\t\t\t\t<minimum>0</minimum>",
                f"<kspace_encoding_step_1>\n\t\t\t\t<minimum>{first_line}</minimum>")


def asymmetric_echo(path: Path, dropped: int) -> None:
    """Drop the first ``dropped`` samples of every image readout (an asymmetric echo: ``center_sample`` moves)."""
    def change(row):
        if is_noise(row):
            return row
        set_samples(row, samples(row)[:, dropped:])
        row["head"]["center_sample"] -= dropped
        return row

    rewrite_readouts(path, change)


NOISE_BIT = 1 << (19 - 1)  # ACQ_IS_NOISE_MEASUREMENT


def is_noise(row) -> bool:
    return bool(int(row["head"]["flags"]) & NOISE_BIT)


def add_coil_noise(path: Path, mixing: np.ndarray, noise_readouts: int = 1, seed: int = 0) -> None:
    """Add complex noise ``mixing @ white`` (correlated across coils) to every readout; the noise readout of a
    ``-C`` file becomes ``noise_readouts`` of them (a scanner takes many)."""
    rng = np.random.default_rng(seed)

    def noisy(row):
        values = samples(row)
        white = rng.standard_normal(values.shape) + 1j * rng.standard_normal(values.shape)
        set_samples(row, values + mixing @ white)
        return row

    rewrite_readouts(path, lambda row: [noisy(row.copy()) for _ in range(noise_readouts)] if is_noise(row)
                     else noisy(row))


def drop_noise_readouts(path: Path) -> None:
    rewrite_readouts(path, lambda row: None if is_noise(row) else row)
