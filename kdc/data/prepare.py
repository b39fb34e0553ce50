"""``kdc data prepare``: raw multi-coil scanner files -> a training dataset of one virtual coil.

Each fully sampled volume of any registered format (fastMRI multi-coil, ISMRMRD, ...) is coil-compressed with its
own SVD matrix (the one training on the raw file would use, :func:`kdc.data.volumes.cached_volume_stats`) and
written, one slice at a time, as a fastMRI **single-coil** file: ``kspace`` (S, H, W) complex64, centred, plus the
source's ``ismrmrd_header`` when it has one. Training on the prepared split gives the items of training on the raw
split, from files C times smaller: a fastMRI-sized dataset that does not fit in memory (15 coils) then usually does,
and the loader reads 1/C of the bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from kdc._io import write_json
from kdc.data.build import staging_dir
from kdc.data.errors import DataError
from kdc.data.formats import (RawSlices, Reader, VolumeInfo, detect, inspect_volume, notice_once,
                              notices_after_success, open_h5)
from kdc.data.formats.base import header_text, parse_header, printable
from kdc.data.volumes import cached_volume_stats
from kdc.mri.coils import apply_compression
from kdc.mri.fft import uncentred_to_centred
from kdc.mri.partial_fourier import PartialFourier


def raw_files(inputs: Sequence[Path]) -> list[Path]:
    """The ``.h5`` files ``inputs`` name: files as given, directories expanded to their ``*.h5``, sorted."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(path.glob("*.h5"))
            if not found:
                raise DataError(f"{path}: directory holds no .h5 files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: file not found")
    if len(set(file.stem for file in files)) != len(files):
        raise DataError("raw files with the same name in different directories: rename them (their stems name the "
                        "prepared volumes)")
    return files


def virtual_coil_slices(file: h5py.File, reader: Reader, info: VolumeInfo,
                        partial_fourier: PartialFourier | None = None) -> Iterator[np.ndarray]:
    """The volume's centred one-coil k-space ``(H, W)``, slice by slice; a ``partial_fourier`` band completed by
    POCS on the virtual coil (as Gadgetron completes it after the coil combination)."""
    matrix = cached_volume_stats(file, reader, info).coil_matrix
    for index in range(info.slices):
        raw: RawSlices = reader.read(file, slice(index, index + 1))
        if matrix is not None:
            raw = replace(raw, kspace=apply_compression(raw.kspace, matrix))
        if partial_fourier is not None:
            yield uncentred_to_centred(partial_fourier.complete(raw.uncentred()))[0, 0]
        else:
            yield (raw.kspace if raw.centred else uncentred_to_centred(raw.kspace))[0, 0]


def prepare_volume(source: Path, target: Path) -> dict:
    """Write ``source``'s virtual-coil volume to ``target``; return its manifest record (the reader's notices are
    said once the volume is written, so that a refused file gets its one-line error alone)."""
    with notices_after_success():
        return write_virtual_coil_volume(source, target, inspect_volume(source))


def write_virtual_coil_volume(source: Path, target: Path, info: VolumeInfo) -> dict:
    """:func:`prepare_volume` of a volume inspected as ``info``: fully sampled raw k-space, a valid header."""
    with open_h5(source) as file:
        reader = detect(file)
        if not reader.read(file, slice(0, 1)).measured_phase:
            raise DataError(f"{source}: holds images ({reader.name}), not raw k-space: train on it directly")
        partial_fourier = reader.partial_fourier(file)
        mask = reader.acquired_mask(file)
        if mask is not None and not (partial_fourier is not None and partial_fourier.covers(mask)):
            raise DataError(f"{source}: undersampled k-space ({reader.name}): training needs fully sampled volumes "
                            "(`kdc reconstruct` takes undersampled files)")
        header = checked_header(file)
        target.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(target, "w") as out:
            kspace = out.create_dataset("kspace", (info.slices, *info.image_shape), np.complex64,
                                        chunks=(1, *info.image_shape))
            for index, values in enumerate(virtual_coil_slices(file, reader, info, partial_fourier)):
                kspace[index] = values
            if header is not None:
                out["ismrmrd_header"] = header
            completed = {} if partial_fourier is None else {"partial_fourier": partial_fourier.text()}
            out.attrs.update({"kdc_source": printable(source), "kdc_source_format": reader.name, "coils": info.coils,
                              **completed})
    if partial_fourier is not None:
        notice_once(f"{source}:partial-fourier", f"{source}: {partial_fourier.text()} completed by POCS (the "
                                                 "prepared k-space holds the POCS estimate there)")
    return {"file": printable(target.name), "source": printable(source), "format": reader.name,
            "slices": info.slices, "coils": info.coils, "shape": list(info.image_shape), **completed}


def checked_header(file: h5py.File) -> bytes | None:
    """The source's ``ismrmrd_header`` once it parses as an ISMRMRD header (never copied unchecked), or None."""
    if "ismrmrd_header" not in file:
        return None
    header = header_text(file, "ismrmrd_header")
    try:
        parse_header(header)
    except DataError as err:
        raise DataError(f"{file.filename}: 'ismrmrd_header': {err}") from None
    return header



def prepare_dataset(inputs: Sequence[Path], out: Path, val_volumes: int = 1, overwrite: bool = False) -> dict:
    """``out/{train,val}/NAME.h5`` (the last ``val_volumes`` files validate) and ``out/dataset.json``."""
    files = raw_files(inputs)
    if not 1 <= val_volumes < len(files):
        raise DataError(f"--val-volumes {val_volumes}: expected 1 to {len(files) - 1} of the {len(files)} file(s), "
                        "so that train and val hold different volumes")
    records = []
    with staging_dir(out, overwrite, files) as staging:
        for index, source in enumerate(files):
            split = "val" if index >= len(files) - val_volumes else "train"
            records.append({"split": split, **prepare_volume(source, staging / split / f"{source.stem}.h5")})
        manifest = {"prepared_from": "raw k-space, coil-compressed to one virtual coil (kdc data prepare)",
                    "volumes": records,
                    "slices": {split: sum(r["slices"] for r in records if r["split"] == split)
                               for split in ("train", "val")}}
        write_json(staging / "dataset.json", manifest)
    return manifest
