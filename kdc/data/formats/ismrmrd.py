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

import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import h5py
import numpy as np

from kdc.data.errors import DataError
from kdc.data.formats.base import (Geometry, RawSlices, Reader, VolumeInfo, header_geometry, header_text,
                                   limits_band, notice_once, parse_header, register)
from kdc.data.formats.limits import COMPLEX64, MAX_EXPANSION, check_dataset, check_declared, check_stored
from kdc.mri.fft import centred_to_uncentred, uncentred_to_centred
from kdc.mri.geometry import slab_geometry
from kdc.mri.noise import (DEFAULT_RECEIVER_NOISE_BANDWIDTH, NoiseError, bandwidth_scale, noise_covariance,
                           prewhiten, prewhitening_matrix)
from kdc.mri.partial_fourier import MIN_SYMMETRIC_HALF, Band, PartialFourier

#: Readouts that carry no image data (ISMRMRD flag bit numbers).
SKIPPED_FLAGS = {"noise": 19, "navigation": 23, "phase correction": 24, "hp feedback": 26, "dummy scan": 27,
                 "rt feedback": 28, "surface coil correction": 29, "phase stabilisation ref": 30,
                 "phase stabilisation": 31}
OTHER_COUNTERS = ("repetition", "contrast", "phase", "set")
#: Fields of an acquisition header the reader uses, and of its ``idx`` counters.
HEAD_FIELDS = ("flags", "number_of_samples", "active_channels", "center_sample", "encoding_space_ref", "position",
               "read_dir", "phase_dir", "idx", "sample_time_us")
COUNTERS = ("kspace_encode_step_1", "slice", *OTHER_COUNTERS)
#: Acquisitions read from ``dataset/data`` at a time: whole records (headers and samples), in blocks, because
#: reading the header field alone leaks the samples HDF5 converts on the way (~ the file's size per read).
BLOCK_ROWS = 512


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
    positions: np.ndarray  # (S, 3) position of the first readout of each slice
    read_dir: np.ndarray  # (3,) of the first readout of the first slice
    phase_dir: np.ndarray
    #: Where the encoded grid ``shape`` was acquired (:func:`sampled_bands`); None when symmetric (no partial Fourier).
    partial_fourier: PartialFourier | None = None
    #: ``(C, C)`` noise prewhitening matrix from the file's noise readouts (:func:`noise_prewhitening`), or None.
    whitening: np.ndarray | None = None

    @property
    def slice_count(self) -> int:
        return len(self.positions)


@register
class IsmrmrdReader(Reader):
    name = "ismrmrd"
    signature = "'dataset' with 'xml' and 'data' (ISMRMRD)"
    phase_encode_axis = -2

    def claims(self, file: h5py.File) -> bool:
        return isinstance(file.get("dataset"), h5py.Group)

    def inspect(self, file: h5py.File) -> VolumeInfo:
        layout = read_layout(file)
        return VolumeInfo(file.filename, self.name, layout.slice_count, (layout.shape[0], layout.recon_width),
                          layout.coils)

    def read(self, file: h5py.File, slices: slice, acceleration: int | None = None,
             check_finite: bool = True) -> RawSlices:
        layout = read_layout(file)
        wanted = np.arange(layout.slice_count)[slices]
        position = np.full(layout.slice_count, -1)
        position[wanted] = np.arange(len(wanted))
        keep = np.flatnonzero(position[layout.slices] >= 0)
        readouts = zip(records(file["dataset/data"], layout.rows[keep]), position[layout.slices[keep]],
                       layout.lines[keep], layout.offsets[keep])
        kspace = fill_grid(layout, readouts, len(wanted))
        if check_finite and not np.isfinite(kspace).all():
            raise DataError(f"{file.filename}: 'dataset/data' holds NaN or Inf samples")
        if layout.partial_fourier is not None and layout.partial_fourier.readout.asymmetric:
            notice_once(f"{file.filename}:echo", f"{file.filename}: asymmetric echo, readout "
                                                 f"{layout.partial_fourier.readout.text()}: completed by POCS")
        return RawSlices(grid_kspace(layout, kspace), True, None, True)

    def partial_fourier(self, file: h5py.File) -> PartialFourier | None:
        return recon_partial_fourier(read_layout(file))

    def acquired_mask(self, file: h5py.File, acceleration: int | None = None) -> np.ndarray | None:
        return line_mask(read_layout(file))

    def geometry(self, file: h5py.File) -> Geometry:
        layout = read_layout(file)
        try:
            voxels = header_geometry(layout.xml, rows="y")
        except DataError as err:
            raise DataError(f"{file.filename}: 'dataset/xml': {err}") from None
        read, phase = layout.read_dir, layout.phase_dir
        if not (np.linalg.norm(read) and np.linalg.norm(phase)):
            return replace(voxels, note="voxel size from the ISMRMRD header; its acquisitions carry no orientation "
                                        "(read_dir, phase_dir zero): slices stacked along z from 0, axial assumed")
        if not (np.isfinite(layout.positions).all() and np.isfinite(read).all() and np.isfinite(phase).all()):
            raise DataError(f"{file.filename}: 'dataset/data' position, read_dir or phase_dir is not finite")
        return slab_geometry((layout.shape[0], layout.recon_width), voxels.spacing[:2], voxels.spacing[2],
                             layout.positions, read / np.linalg.norm(read), phase / np.linalg.norm(phase))


def records(data: h5py.Dataset, rows: np.ndarray) -> Iterator[np.ndarray]:
    """The float32 samples of acquisitions ``rows`` (ascending), read in blocks of whole records."""
    index = 0
    while index < len(rows):
        start = int(rows[index])
        stop = min(start + BLOCK_ROWS, int(rows[-1]) + 1)
        block = data[start:stop]["data"]
        while index < len(rows) and rows[index] < stop:
            yield np.asarray(block[int(rows[index]) - start], np.float32)
            index += 1


#: Layouts of open files, so that reading slice after slice places the readouts once.
_LAYOUTS: dict[int, Layout] = {}


def read_layout(file: h5py.File) -> Layout:
    """:func:`place_readouts` of ``file``, computed once per open file."""
    key = id(file)
    if key not in _LAYOUTS:
        layout = place_readouts(file)
        _LAYOUTS[key] = layout
        weakref.finalize(file, _LAYOUTS.pop, key, None)
    return _LAYOUTS[key]


def acquisitions(file: h5py.File) -> h5py.Dataset:
    """``dataset/data`` if it is a 1-D array of ISMRMRD acquisitions (``head``, ``data`` float32 samples)."""
    name, group = file.filename, file["dataset"]
    if "data" not in group:
        raise DataError(f"{name}: missing 'dataset/data' (the acquisitions), found {sorted(group.keys())}")
    data = group["data"]
    expected = "expected a 1-D array of ISMRMRD acquisitions (compound 'head', 'data')"
    if not isinstance(data, h5py.Dataset):
        raise DataError(f"{name}: 'dataset/data' is a group, {expected}")
    fields = data.dtype.fields or {}
    head = fields["head"][0] if "head" in fields else None
    if (data.ndim != 1 or head is None or "data" not in fields or not set(HEAD_FIELDS) <= set(head.names or ())
            or not set(COUNTERS) <= set(head["idx"].names or ())
            or h5py.check_vlen_dtype(fields["data"][0]) != np.float32):
        raise DataError(f"{name}: 'dataset/data' is {data.dtype.str if data.dtype.fields is None else 'a compound'} "
                        f"{data.shape}, {expected}")
    check_dataset(f"{name}: 'dataset/data'", data, itemsize=1)
    return data


def read_heads(data: h5py.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The acquisition headers of ``data`` and the number of float32 values in each one's samples, in one pass."""
    heads = np.empty(data.shape, data.dtype["head"])
    lengths = np.empty(data.shape, np.int64)
    for start in range(0, data.shape[0], BLOCK_ROWS):
        block = data[start : start + BLOCK_ROWS]
        heads[start : start + len(block)] = block["head"]
        lengths[start : start + len(block)] = [len(samples) for samples in block["data"]]
    return heads, lengths


def place_readouts(file: h5py.File) -> Layout:
    """Check the header and the acquisition headers of an ISMRMRD file and place its readouts."""
    name, group = file.filename, file["dataset"]
    if "xml" not in group:
        raise DataError(f"{name}: missing 'dataset/xml' (the ISMRMRD header), found {sorted(group.keys())}")
    xml = header_text(file, "dataset/xml")
    encoding = cartesian_encoding(name, xml)
    data = acquisitions(file)
    if data.shape[0] == 0:
        raise DataError(f"{name}: 'dataset/data' holds no acquisitions")
    heads, lengths = read_heads(data)
    kept = image_readouts(heads)
    for counter in OTHER_COUNTERS:
        values = heads["idx"][counter]
        if (values[kept] != 0).any():
            notice_once(f"{name}:{counter}", f"{name}: reading {counter} 0 only, of {int(values[kept].max()) + 1}")
        kept &= values == 0
    rows = np.flatnonzero(kept)
    if rows.size == 0:
        raise DataError(f"{name}: 'dataset/data' holds no image readouts (all noise, navigator or calibration scans)")
    layout = place_heads(name, xml, encoding, rows, heads[rows], lengths[rows])
    return replace(layout, whitening=noise_prewhitening(file, heads, lengths, layout))


def cartesian_encoding(name: str, xml: bytes, where: str = "'dataset/xml'") -> Any:
    """The first encoding of an ISMRMRD XML header if kdc reads it (Cartesian, 2-D, recon x within encoded x), else
    a DataError naming ``name`` and ``where``."""
    try:
        encoding = parse_header(xml).encoding[0]
    except DataError as err:
        raise DataError(f"{name}: {where}: {err}") from None
    trajectory = getattr(encoding.trajectory, "value", encoding.trajectory)
    if trajectory != "cartesian":
        raise DataError(f"{name}: {where} encoding trajectory is {trajectory!r}, expected 'cartesian'")
    encoded, recon = encoding.encodedSpace.matrixSize, encoding.reconSpace.matrixSize
    if encoded.z != 1:
        raise DataError(f"{name}: {where} encodedSpace matrixSize z={encoded.z}: a 3-D encoding, expected 2-D (z=1)")
    if not 0 < recon.x <= encoded.x:
        raise DataError(f"{name}: {where} reconSpace matrixSize x={recon.x}, expected 1 to the encodedSpace's "
                        f"x={encoded.x}")
    return encoding


def image_readouts(heads: np.ndarray) -> np.ndarray:
    """Which acquisition headers carry image data: not noise, navigator, ... (:data:`SKIPPED_FLAGS`), encoding 0."""
    flags = heads["flags"].astype(np.uint64)
    kept = np.ones(heads.shape, dtype=bool)
    for bit in SKIPPED_FLAGS.values():
        kept &= (flags & np.uint64(1 << (bit - 1))) == 0
    return kept & (heads["encoding_space_ref"] == 0)


def first_counters(heads: np.ndarray) -> np.ndarray:
    """Which acquisition headers belong to the first repetition, contrast, phase and set (the ones kdc reads)."""
    kept = np.ones(heads.shape, dtype=bool)
    for counter in OTHER_COUNTERS:
        kept &= heads["idx"][counter] == 0
    return kept


def place_heads(name: str, xml: bytes, encoding: Any, rows: np.ndarray, heads: np.ndarray, lengths: np.ndarray,
                data: str = "'dataset/data'") -> Layout:
    """Place the image readouts ``heads`` (acquisition headers; ``rows`` where each one's samples are,
    ``lengths`` its float32 count) on the grid of ``encoding``; ``data`` names the acquisitions in errors."""
    encoded, recon = encoding.encodedSpace.matrixSize, encoding.reconSpace.matrixSize
    coils = np.unique(heads["active_channels"])
    if coils.size != 1 or coils[0] == 0:
        raise DataError(f"{name}: {data} active_channels is {sorted(coils.tolist())}: expected one coil count "
                        "above 0")
    samples = np.unique(heads["number_of_samples"])
    if samples.size != 1 or not 0 < samples[0] <= encoded.x:
        raise DataError(f"{name}: {data} number_of_samples is {sorted(samples.tolist())}, expected one value "
                        f"from 1 to the encoded matrix x={encoded.x} (inconsistent matrix sizes)")
    short = np.flatnonzero(lengths != 2 * int(coils[0]) * int(samples[0]))
    if short.size:
        raise DataError(f"{name}: {data} acquisition {int(rows[short[0]])} holds {int(lengths[short[0]])} "
                        f"values, expected {int(coils[0])} channels x {int(samples[0])} samples x 2 (re, im) "
                        f"({short.size} acquisition(s) in all)")
    limits = encoding.encodingLimits.kspace_encoding_step_1
    centre = limits.center if limits is not None and limits.center is not None else encoded.y // 2
    lines = heads["idx"]["kspace_encode_step_1"].astype(np.int64) - centre + encoded.y // 2
    if lines.min() < 0 or lines.max() >= encoded.y:
        raise DataError(f"{name}: {data} kspace_encode_step_1 runs to {int(lines.max())}, outside the encoded "
                        f"matrix y={encoded.y} (inconsistent matrix sizes)")
    offsets = encoded.x // 2 - heads["center_sample"].astype(np.int64)
    if offsets.min() < 0 or (offsets + samples[0]).max() > encoded.x:
        raise DataError(f"{name}: {data} center_sample places readouts outside the encoded matrix "
                        f"x={encoded.x}")
    numbers, slices = np.unique(heads["idx"]["slice"], return_inverse=True)
    where = f"{name}: 'dataset/xml' with {data}"
    grid = check_declared(where, (len(numbers), int(coils[0]), encoded.y, encoded.x), COMPLEX64)
    check_stored(where, grid, rows.size * int(coils[0]) * int(samples[0]) * COMPLEX64,
                 f"the readouts fill less than 1/{MAX_EXPANSION} of the encoded matrix")
    check_slices_sample_the_same_lines(name, numbers, slices, lines, encoded.y)
    first = np.unique(slices, return_index=True)[1]
    bands = sampled_bands(name, encoding, lines, offsets, int(samples[0]), data)
    return Layout(rows, slices.astype(np.int64), lines, offsets, int(samples[0]), int(coils[0]),
                  (int(encoded.y), int(encoded.x)), int(recon.x), xml, heads["position"][first].astype(float),
                  heads["read_dir"][first[0]].astype(float), heads["phase_dir"][first[0]].astype(float), bands)


def fill_grid(layout: Layout, readouts: Iterable[tuple[np.ndarray, int, int, int]], slices: int) -> np.ndarray:
    """Centred k-space ``(slices, C, H, encoded X)`` of ``readouts`` of ``layout``: each one's float32 samples, output
    slice, line and offset; repeated readouts of a line are averaged."""
    kspace = np.zeros((slices, layout.coils, *layout.shape), np.complex64)
    counts = np.zeros((slices, layout.shape[0]), np.int32)
    for values, index, line, offset in readouts:
        samples = values.view(np.complex64).reshape(layout.coils, layout.samples)
        kspace[index, :, line, offset : offset + layout.samples] += samples
        counts[index, line] += 1
    kspace /= np.maximum(counts, 1)[:, None, :, None]
    return kspace


def line_mask(layout: Layout) -> np.ndarray | None:
    """The uncentred ``(H, recon W)`` mask of the lines ``layout`` acquires, None when it acquires every line."""
    rows = np.zeros(layout.shape[0], dtype=bool)
    rows[layout.lines] = True
    if rows.all():
        return None
    mask = np.broadcast_to(rows[:, None], (layout.shape[0], layout.recon_width))
    return np.fft.ifftshift(mask).astype(np.float32)


def check_slices_sample_the_same_lines(name: str, numbers: np.ndarray, slices: np.ndarray, lines: np.ndarray,
                                       height: int) -> None:
    """Refuse slices that acquire fewer lines than the others: the volume has one mask, the lines any slice holds
    (every readout given its own slice would otherwise read as fully sampled)."""
    acquired = np.zeros((len(numbers), height), dtype=bool)
    acquired[slices, lines] = True
    per_slice, union = acquired.sum(axis=1), int(acquired.any(axis=0).sum())
    short = np.flatnonzero(per_slice < union)
    if short.size:
        raise DataError(f"{name}: 'dataset/data' slice {int(numbers[short[0]])} holds {int(per_slice[short[0]])} of "
                        f"the {union} lines (kspace_encode_step_1) the slices acquire in all ({short.size} of "
                        f"{len(numbers)} slices hold fewer): expected every slice to sample the same lines")


def remove_oversampling(kspace: np.ndarray, width: int) -> np.ndarray:
    """Centred k-space ``(..., X)`` along the readout -> ``(..., width)``: the image's central ``width`` columns."""
    if kspace.shape[-1] == width:
        return kspace
    shift = np.fft
    image = shift.fftshift(shift.ifft(shift.ifftshift(kspace, -1), axis=-1, norm="ortho"), -1)
    start = (kspace.shape[-1] - width) // 2
    cropped = image[..., start : start + width]
    return shift.fftshift(shift.fft(shift.ifftshift(cropped, -1), axis=-1, norm="ortho"), -1).astype(np.complex64)


#: ISMRMRD flag bit of noise readouts (ACQ_IS_NOISE_MEASUREMENT).
NOISE_FLAG = SKIPPED_FLAGS["noise"]


def sampled_bands(name: str, encoding: Any, lines: np.ndarray, offsets: np.ndarray, samples: int,
                  data: str = "'dataset/data'") -> PartialFourier | None:
    """The partial Fourier of an encoding, or None when it samples symmetrically about DC: along the phase encodes
    the header's ``encodingLimits`` ``kspace_encoding_step_1`` (``minimum`` .. ``maximum`` around ``center``, as
    ISMRMRD states partial Fourier), along the readout the readouts' ``center_sample`` within their
    ``number_of_samples`` (asymmetric echo). Limits that contradict the matrix or the readouts are a DataError."""
    encoded = encoding.encodedSpace.matrixSize
    height, width = int(encoded.y), int(encoded.x)
    try:
        rows = limits_band(encoding, height) or Band(0, height, height)
    except DataError as err:
        raise DataError(f"{name}: 'dataset/xml' {err}") from None
    outside = lines[(lines < rows.start) | (lines >= rows.stop)]
    if outside.size:
        limits = encoding.encodingLimits.kspace_encoding_step_1
        raise DataError(f"{name}: {data} kspace_encode_step_1 {int(outside[0]) + limits.center - height // 2} is "
                        f"outside the header's encodingLimits {limits.minimum}..{limits.maximum} ({outside.size} "
                        "readout(s) in all)")
    columns = Band(int(offsets.min()), int(offsets.max()) + samples, width)
    for what, band in (("kspace_encode_step_1 lines", rows), ("readout samples (center_sample)", columns)):
        if band.asymmetric and min(band.before, band.after - 1) < MIN_SYMMETRIC_HALF:
            raise DataError(f"{name}: {data} partial Fourier acquires {band.text()} {what}: "
                            f"{min(band.before, band.after - 1)} on one side of the centre, expected at least "
                            f"{MIN_SYMMETRIC_HALF} to estimate the phase from")
    return PartialFourier(rows, columns, -2) if rows.asymmetric or columns.asymmetric else None


def complete_readout(layout: Layout, kspace: np.ndarray) -> np.ndarray:
    """Centred ``(S, C, H, encoded X)`` k-space with an asymmetric echo completed along the readout by POCS, coil by
    coil, before the readout oversampling is removed (unchanged without one)."""
    bands = layout.partial_fourier
    if bands is None or not bands.readout.asymmetric:
        return kspace
    completed = bands.complete_readout(centred_to_uncentred(kspace), bands.covers(line_mask(layout)))
    return uncentred_to_centred(completed).astype(np.complex64)


def recon_partial_fourier(layout: Layout) -> PartialFourier | None:
    """The partial Fourier of the images :meth:`IsmrmrdReader.read` yields (H, recon W): the phase encodes' band;
    the readout is complete once read (:func:`complete_readout`)."""
    bands = layout.partial_fourier
    if bands is None or not bands.phase.asymmetric:
        return None
    return PartialFourier(bands.rows, Band(0, layout.recon_width, layout.recon_width), -2)


def noise_readouts(heads: np.ndarray) -> np.ndarray:
    """Which acquisition headers are noise readouts (flag ``ACQ_IS_NOISE_MEASUREMENT``)."""
    return (heads["flags"].astype(np.uint64) & np.uint64(1 << (NOISE_FLAG - 1))) != 0


def noise_prewhitening(file: h5py.File, heads: np.ndarray, lengths: np.ndarray, layout: Layout) -> np.ndarray | None:
    """:func:`prewhitening` of the file's noise readouts; None when it has none."""
    rows = np.flatnonzero(noise_readouts(heads))
    if rows.size == 0:
        return None
    values = list(records(file["dataset/data"], rows))
    image_dwell = float(heads["sample_time_us"][layout.rows[0]])
    whitening = prewhitening(file.filename, layout, heads[rows], values, image_dwell)
    per_coil = sum(samples.size for samples in values) // (2 * layout.coils)
    notice_once(f"{file.filename}:noise", f"{file.filename}: coils prewhitened with the noise covariance of "
                                          f"{rows.size} noise readout(s) ({per_coil} samples per coil)")
    return whitening


def prewhitening(name: str, layout: Layout, heads: np.ndarray, values: Sequence[np.ndarray], image_dwell_us: float,
                 data: str = "'dataset/data'") -> np.ndarray:
    """The ``(C, C)`` prewhitening matrix of noise readouts (``heads``, their float32 samples ``values``): their
    covariance, scaled by their dwell time against the image readouts' (``image_dwell_us``) and the header's
    ``relativeReceiverNoiseBandwidth`` (0.793 when absent), as Gadgetron's ``NoiseAdjustGadget`` computes it."""
    channels = np.unique(heads["active_channels"])
    if channels.tolist() != [layout.coils]:
        raise DataError(f"{name}: {data} noise readouts have active_channels {sorted(channels.tolist())}, expected "
                        f"the image readouts' {layout.coils}")
    counts = heads["number_of_samples"].astype(np.int64)
    short = [index for index, samples in enumerate(values) if samples.size != 2 * layout.coils * counts[index]]
    if short:
        raise DataError(f"{name}: {data} noise readout {short[0]} holds {values[short[0]].size} values, expected "
                        f"{layout.coils} channels x {int(counts[short[0]])} samples x 2 (re, im)")
    samples = np.concatenate([np.asarray(readout, np.float32).view(np.complex64).reshape(layout.coils, -1)
                              for readout in values], axis=1)
    system = parse_header(layout.xml).acquisitionSystemInformation
    bandwidth = getattr(system, "relativeReceiverNoiseBandwidth", None) or DEFAULT_RECEIVER_NOISE_BANDWIDTH
    scale = bandwidth_scale(image_dwell_us, float(heads["sample_time_us"][0]), bandwidth)
    try:
        return prewhitening_matrix(noise_covariance(samples), scale)
    except NoiseError as err:
        raise DataError(f"{name}: {data} noise readouts: {err}") from None


def grid_kspace(layout: Layout, kspace: np.ndarray) -> np.ndarray:
    """The filled encoded grid of :func:`fill_grid` -> the k-space a reader yields: coils prewhitened
    (``layout.whitening``), an asymmetric echo completed (:func:`complete_readout`), the readout oversampling
    removed. The file reader and the MRD stream both finish their slices with it."""
    if layout.whitening is not None:
        kspace = prewhiten(kspace, layout.whitening)
    return remove_oversampling(complete_readout(layout, kspace), layout.recon_width)
