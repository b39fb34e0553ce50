"""ISMRMRD h5 (the ISMRM raw-data standard): group ``dataset`` with the XML header ``xml`` and the acquisitions
``data`` (one readout per row: header, trajectory, samples of every active coil), read with the ``ismrmrd`` package.

Cartesian 2-D encodings only. Each readout goes to the row of its ``kspace_encode_step_1`` counter (the header's
``encodingLimits`` centre at H/2) of the slice of its ``slice`` counter, its samples placed around
``center_sample``; the readout oversampling is removed (image cropped along x to the reconstruction matrix); the
rows acquired become the mask; parallel-imaging calibration lines are kept; noise, navigator, phase-correction
and dummy readouts are skipped; repeated readouts of a line (averages) are averaged; only the first repetition,
contrast, phase and set are read. Images are (phase encode y, readout x), k-space centred. The geometry comes from
the header (voxel size) and the first readout of each slice (its ``position``, ``read_dir`` along a row,
``phase_dir`` down a column).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import h5py
import numpy as np

from kdc.data.errors import DataError
from kdc.data.formats.base import (Geometry, RawSlices, Reader, VolumeInfo, header_geometry, notice_once,
                                   parse_header, register)
from kdc.mri.geometry import slab_geometry

#: Readouts that carry no image data (ISMRMRD flag bit numbers).
SKIPPED_FLAGS = {"noise": 19, "navigation": 23, "phase correction": 24, "hp feedback": 26, "dummy scan": 27,
                 "rt feedback": 28, "surface coil correction": 29, "phase stabilisation ref": 30,
                 "phase stabilisation": 31}
OTHER_COUNTERS = ("repetition", "contrast", "phase", "set")


@dataclass(frozen=True)
class Layout:
    """Where every kept readout goes: rows of ``dataset/data``, their slice and line, and the grid."""

    rows: np.ndarray  # indices into dataset/data
    slices: np.ndarray  # slice number (0..S-1) of each kept readout
    lines: np.ndarray  # row (ky) of each kept readout, centred grid
    offsets: np.ndarray  # where its first sample goes along the encoded readout
    samples: int
    coils: int
    shape: tuple[int, int]  # (phase encodes, encoded readout)
    recon_width: int
    xml: bytes


@register
class IsmrmrdReader(Reader):
    name = "ismrmrd"
    signature = "'dataset' with 'xml' and 'data' (ISMRMRD)"
    phase_encode_axis = -2

    def claims(self, file: h5py.File) -> bool:
        return isinstance(file.get("dataset"), h5py.Group)

    def inspect(self, file: h5py.File) -> VolumeInfo:
        layout = read_layout(file)
        return VolumeInfo(file.filename, self.name, int(layout.slices.max()) + 1,
                          (layout.shape[0], layout.recon_width), layout.coils)

    def read(self, file: h5py.File, slices: slice, acceleration: int | None = None,
             check_finite: bool = True) -> RawSlices:
        layout = read_layout(file)
        wanted = np.arange(int(layout.slices.max()) + 1)[slices]
        kspace = np.zeros((len(wanted), layout.coils, *layout.shape), np.complex64)
        counts = np.zeros((len(wanted), layout.shape[0]), np.int32)
        position = {int(number): index for index, number in enumerate(wanted)}
        keep = np.flatnonzero(np.isin(layout.slices, wanted))
        data = file["dataset/data"]
        for row, slice_number, line, offset in zip(layout.rows[keep], layout.slices[keep], layout.lines[keep],
                                                    layout.offsets[keep]):
            samples = np.asarray(data[int(row)]["data"]).view(np.complex64).reshape(layout.coils, layout.samples)
            index = position[int(slice_number)]
            kspace[index, :, line, offset : offset + layout.samples] += samples
            counts[index, line] += 1
        kspace /= np.maximum(counts, 1)[:, None, :, None]
        if check_finite and not np.isfinite(kspace).all():
            raise DataError(f"{file.filename}: 'dataset/data' holds NaN or Inf samples")
        return RawSlices(remove_oversampling(kspace, layout.recon_width), True, None, True)

    def acquired_mask(self, file: h5py.File, acceleration: int | None = None) -> np.ndarray | None:
        layout = read_layout(file)
        rows = np.zeros(layout.shape[0], dtype=bool)
        rows[layout.lines] = True
        if rows.all():
            return None
        mask = np.broadcast_to(rows[:, None], (layout.shape[0], layout.recon_width))
        return np.fft.ifftshift(mask).astype(np.float32)

    def geometry(self, file: h5py.File) -> Geometry:
        layout = read_layout(file)
        try:
            voxels = header_geometry(layout.xml, rows="y")
        except DataError as err:
            raise DataError(f"{file.filename}: 'dataset/xml': {err}") from None
        heads = file["dataset/data"].fields("head")[layout.rows]
        first = [int(np.flatnonzero(layout.slices == number)[0]) for number in range(int(layout.slices.max()) + 1)]
        read, phase = heads["read_dir"][first[0]], heads["phase_dir"][first[0]]
        if not (np.linalg.norm(read) and np.linalg.norm(phase)):
            return replace(voxels, note="voxel size from the ISMRMRD header; its acquisitions carry no orientation "
                                        "(read_dir, phase_dir zero): slices stacked along z from 0, axial assumed")
        return slab_geometry((layout.shape[0], layout.recon_width), voxels.spacing[:2], voxels.spacing[2],
                             heads["position"][first].astype(float), read / np.linalg.norm(read),
                             phase / np.linalg.norm(phase))


def read_layout(file: h5py.File) -> Layout:
    """Check the header and the acquisition headers of an ISMRMRD file and place its readouts."""
    name, group = file.filename, file["dataset"]
    if "xml" not in group:
        raise DataError(f"{name}: missing 'dataset/xml' (the ISMRMRD header), found {sorted(group.keys())}")
    if "data" not in group:
        raise DataError(f"{name}: missing 'dataset/data' (the acquisitions), found {sorted(group.keys())}")
    xml = group["xml"][0]
    try:
        encoding = parse_header(xml).encoding[0]
    except DataError as err:
        raise DataError(f"{name}: 'dataset/xml': {err}") from None
    trajectory = getattr(encoding.trajectory, "value", encoding.trajectory)
    if trajectory != "cartesian":
        raise DataError(f"{name}: 'dataset/xml' encoding trajectory is {trajectory!r}, expected 'cartesian'")
    encoded, recon = encoding.encodedSpace.matrixSize, encoding.reconSpace.matrixSize
    if encoded.z != 1:
        raise DataError(f"{name}: 'dataset/xml' encodedSpace matrixSize z={encoded.z}: a 3-D encoding, expected 2-D "
                        "(z=1)")
    heads = group["data"].fields("head")[()]
    if heads.size == 0:
        raise DataError(f"{name}: 'dataset/data' holds no acquisitions")
    flags = heads["flags"].astype(np.uint64)
    kept = np.ones(heads.size, dtype=bool)
    for bit in SKIPPED_FLAGS.values():
        kept &= (flags & np.uint64(1 << (bit - 1))) == 0
    kept &= heads["encoding_space_ref"] == 0
    for counter in OTHER_COUNTERS:
        values = heads["idx"][counter]
        if (values[kept] != 0).any():
            notice_once(f"{name}:{counter}", f"{name}: reading {counter} 0 only, of {int(values[kept].max()) + 1}")
        kept &= values == 0
    rows = np.flatnonzero(kept)
    if rows.size == 0:
        raise DataError(f"{name}: 'dataset/data' holds no image readouts (all noise, navigator or calibration scans)")
    heads = heads[rows]
    coils = np.unique(heads["active_channels"])
    if coils.size != 1 or coils[0] == 0:
        raise DataError(f"{name}: 'dataset/data' active_channels is {sorted(coils.tolist())}: expected one coil count "
                        "above 0")
    samples = np.unique(heads["number_of_samples"])
    if samples.size != 1 or samples[0] > encoded.x:
        raise DataError(f"{name}: 'dataset/data' number_of_samples is {sorted(samples.tolist())}, expected one value "
                        f"up to the encoded matrix x={encoded.x} (inconsistent matrix sizes)")
    if recon.x > encoded.x:
        raise DataError(f"{name}: 'dataset/xml' reconSpace x={recon.x} exceeds encodedSpace x={encoded.x}")
    limits = encoding.encodingLimits.kspace_encoding_step_1
    centre = limits.center if limits is not None and limits.center is not None else encoded.y // 2
    lines = heads["idx"]["kspace_encode_step_1"].astype(np.int64) - centre + encoded.y // 2
    if lines.min() < 0 or lines.max() >= encoded.y:
        raise DataError(f"{name}: 'dataset/data' kspace_encode_step_1 runs to {int(lines.max())}, outside the encoded "
                        f"matrix y={encoded.y} (inconsistent matrix sizes)")
    offsets = encoded.x // 2 - heads["center_sample"].astype(np.int64)
    if offsets.min() < 0 or (offsets + samples[0]).max() > encoded.x:
        raise DataError(f"{name}: 'dataset/data' center_sample places readouts outside the encoded matrix "
                        f"x={encoded.x}")
    return Layout(rows, _numbered(heads["idx"]["slice"]), lines, offsets, int(samples[0]), int(coils[0]),
                  (int(encoded.y), int(encoded.x)), int(recon.x), xml)


def _numbered(slices: np.ndarray) -> np.ndarray:
    """Slice counters renumbered 0..S-1 in order (counters may skip values)."""
    return np.unique(slices, return_inverse=True)[1].astype(np.int64)


def remove_oversampling(kspace: np.ndarray, width: int) -> np.ndarray:
    """Centred k-space ``(..., X)`` along the readout -> ``(..., width)``: the image's central ``width`` columns."""
    if kspace.shape[-1] == width:
        return kspace
    shift = np.fft
    image = shift.fftshift(shift.ifft(shift.ifftshift(kspace, -1), axis=-1, norm="ortho"), -1)
    start = (kspace.shape[-1] - width) // 2
    cropped = image[..., start : start + width]
    return shift.fftshift(shift.fft(shift.ifftshift(cropped, -1), axis=-1, norm="ortho"), -1).astype(np.complex64)
