"""``kdc reconstruct MODEL - --format mrd``: an MRD v2 stream (the ``mrd-python`` binary format: a header, then
acquisitions) on stdin, MRD v2 images on stdout, so that kdc composes with ``mrd-python``'s tools in a pipe::

    python -m mrd.tools.phantom -m 128 -c 8 | kdc reconstruct MODEL - --format mrd --acc 4 \\
        | python -m mrd.tools.export_png_images -o slice_

The stream is decoded and encoded with ``mrd-python``, the format's reference implementation (as ``kdc serve
--protocol mrd`` uses the ``ismrmrd`` package for MRD v1), behind a bound on every length the stream declares
(:func:`bounded_input`, checked before anything is allocated). Each acquisition is turned into the ISMRMRD
acquisition header kdc's reader reads and handed to the v1 server's :class:`kdc.runtime.mrd.SliceAssembler`, so a
stream is read with the same rules as an ISMRMRD file and normalised as ``kdc reconstruct`` normalises a file (one
volume): the images go out when the last slice the encoding limits count is complete, or at the end of the stream.
They are ``ImageFloat`` magnitudes (what ``export_png_images`` takes) placed as each slice's first readout, with
the meta attributes of the v1 server's images.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from kdc.errors import KdcError
from kdc.runtime.mrd import MrdLimits, SliceAssembler, SliceImage, StreamOptions, meta_attributes, stored_pixels
from kdc.runtime.reconstruct import Settings
from kdc.runtime.session import Reconstructor

#: The stream's name in messages.
STDIN = "stdin"
#: Which counters of an MRD v2 acquisition go to the ISMRMRD header's ``idx``.
COUNTERS = ("kspace_encode_step_1", "kspace_encode_step_2", "average", "slice", "contrast", "phase", "repetition",
            "set", "segment")
#: Largest sample and channel count an ISMRMRD acquisition header holds (uint16).
UINT16_MAX = 0xFFFF


class MrdV2Error(KdcError):
    """An MRD v2 stream kdc cannot read."""


def bounded_input(stream: BinaryIO, limit: int) -> Any:
    """``mrd-python``'s input stream over ``stream``, refusing any length above ``limit`` bytes before it allocates
    it (the decoder allocates a declared array's bytes before it reads them)."""
    from mrd import _binary

    class BoundedInput(_binary.CodedInputStream):
        def read_view(self, count: int) -> memoryview:
            return super().read_view(checked_count(count, limit))

        def read_bytearray(self, count: int) -> bytearray:
            return super().read_bytearray(checked_count(count, limit))

    return BoundedInput(stream)


def checked_count(count: int, limit: int) -> int:
    if count > limit:
        raise MrdV2Error(f"{STDIN}: MRD v2 stream declares an item of {count} bytes, above the limit of {limit} "
                         "(an MRD v1 server's --max-message-mb)")
    return count


def open_reader(stream: BinaryIO, limit: int) -> Any:
    """An ``mrd.BinaryMrdReader`` of ``stream`` whose lengths are bounded by ``limit``; the magic bytes, format
    version and schema are checked as the library checks them."""
    import mrd
    from mrd import _binary

    reader = mrd.BinaryMrdReader.__new__(mrd.BinaryMrdReader)
    mrd.MrdReaderBase.__init__(reader)
    reader._stream = bounded_input(stream, limit)
    try:
        magic = bytes(reader._stream.read_view(len(_binary.MAGIC_BYTES)))
    except EOFError:
        raise MrdV2Error(f"{STDIN}: not an MRD v2 stream (it ends before the magic bytes "
                         f"{_binary.MAGIC_BYTES!r})") from None
    if magic != _binary.MAGIC_BYTES:
        raise MrdV2Error(f"{STDIN}: not an MRD v2 stream (it starts with {magic!r}, expected {_binary.MAGIC_BYTES!r})")
    version = decoded("the format version", lambda: _binary.read_fixed_int32(reader._stream))
    if version != _binary.CURRENT_BINARY_FORMAT_VERSION:
        raise MrdV2Error(f"{STDIN}: MRD v2 binary format version {version}, expected "
                         f"{_binary.CURRENT_BINARY_FORMAT_VERSION}")
    reader._schema = decoded("the schema", lambda: _binary.string_serializer.read(reader._stream))
    if reader._schema != mrd.MrdReaderBase.schema:
        raise MrdV2Error(f"{STDIN}: the MRD v2 stream's schema is not the MRD protocol's of mrd-python "
                         f"{mrd_version()}")
    return reader


def mrd_version() -> str:
    from importlib.metadata import version

    return version("mrd-python")


def decoded(what: str, read: Any) -> Any:
    """``read()``, with a decoding failure of a crafted or cut stream as one line naming ``what``."""
    try:
        return read()
    except KdcError:
        raise
    except EOFError:
        raise MrdV2Error(f"{STDIN}: MRD v2 stream ends in the middle of {what}") from None
    except Exception as err:  # the generated decoder raises what its parsing meets
        raise MrdV2Error(f"{STDIN}: MRD v2 stream: {what} does not decode ({type(err).__name__}: {err})") from None


def header_xml(header: Any) -> bytes:
    """The ISMRMRD (v1) XML of an MRD v2 header's first encoding: what kdc's ISMRMRD reader checks and reads."""
    if header is None or not header.encoding:
        raise MrdV2Error(f"{STDIN}: the MRD v2 header has no encoding")
    encoding = header.encoding[0]
    spaces = []
    for tag, space in (("encodedSpace", encoding.encoded_space), ("reconSpace", encoding.recon_space)):
        matrix, fov = space.matrix_size, space.field_of_view_mm
        spaces.append(f"<{tag}><matrixSize><x>{matrix.x}</x><y>{matrix.y}</y><z>{matrix.z}</z></matrixSize>"
                      f"<fieldOfView_mm><x>{float(fov.x)!r}</x><y>{float(fov.y)!r}</y><z>{float(fov.z)!r}</z>"
                      f"</fieldOfView_mm></{tag}>")
    limits = "".join(
        f"<{name}><minimum>{limit.minimum}</minimum><maximum>{limit.maximum}</maximum><center>{limit.center}"
        f"</center></{name}>"
        for name in ("kspace_encoding_step_0", "kspace_encoding_step_1", "kspace_encoding_step_2", "average",
                     "slice", "contrast", "phase", "repetition", "set", "segment")
        if (limit := getattr(encoding.encoding_limits, name, None)) is not None)
    conditions = header.experimental_conditions
    frequency = conditions.h1resonance_frequency_hz if conditions is not None else 0  # required by the XML schema
    return (f'<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><experimentalConditions>'
            f"<H1resonanceFrequency_Hz>{frequency}</H1resonanceFrequency_Hz></experimentalConditions>"
            f'<encoding>{"".join(spaces)}'
            f"<encodingLimits>{limits}</encodingLimits><trajectory>{encoding.trajectory.name.lower()}</trajectory>"
            "</encoding></ismrmrdHeader>").encode()


def acquisition_record(acquisition: Any, number: int, dtype: np.dtype) -> tuple[bytes, np.ndarray]:
    """The ISMRMRD acquisition header (``dtype``, 340 bytes) and float32 samples of an MRD v2 acquisition."""
    data = np.asarray(acquisition.data)
    if data.dtype != np.complex64 or data.ndim != 2 or not 0 < data.shape[0] <= UINT16_MAX \
            or not 0 < data.shape[1] <= UINT16_MAX:
        raise MrdV2Error(f"{STDIN}: MRD v2 acquisition {number} holds {data.dtype} samples {data.shape}, expected "
                         f"complex64 (coils, samples) of 1 to {UINT16_MAX} each")
    try:
        return fill_record(acquisition.head, np.zeros((), dtype), data.shape), data.view(np.float32).reshape(-1)
    except (OverflowError, ValueError, TypeError) as err:
        raise MrdV2Error(f"{STDIN}: MRD v2 acquisition {number} has a header field an ISMRMRD acquisition header "
                         f"cannot hold ({err})") from None


def fill_record(head: Any, record: np.ndarray, shape: tuple[int, ...]) -> bytes:
    """The bytes of ISMRMRD header ``record`` filled from MRD v2 acquisition header ``head`` of samples ``shape``
    (coils, samples); numpy refuses a value its field cannot hold."""
    record["version"] = 1
    record["flags"] = int(head.flags)
    record["measurement_uid"] = head.measurement_uid
    record["scan_counter"] = head.scan_counter or 0
    record["acquisition_time_stamp"] = head.acquisition_time_stamp or 0
    stamps = list(head.physiology_time_stamp)[:3]
    record["physiology_time_stamp"][: len(stamps)] = stamps
    record["number_of_samples"] = shape[1]
    record["available_channels"] = record["active_channels"] = shape[0]
    for key in ("discard_pre", "discard_post", "center_sample", "encoding_space_ref"):
        record[key] = getattr(head, key) or 0
    record["sample_time_us"] = head.sample_time_us or 0.0
    for key in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
        record[key] = getattr(head, key)
    for key in COUNTERS:
        record["idx"][key] = getattr(head.idx, key) or 0
    return record.tobytes()


def image_item(image: SliceImage, options: StreamOptions) -> Any:
    """The MRD v2 ``ImageFloat`` of a slice, placed as its first readout, with the v1 server's meta attributes."""
    import mrd

    data, scale, top = stored_pixels(image.pixels, "float")
    first = image.first
    head = mrd.ImageHeader(image_type=mrd.ImageType.MAGNITUDE)
    head.measurement_uid = int(first["measurement_uid"])
    head.field_of_view[:] = image.field_of_view
    head.position[:], head.col_dir[:], head.line_dir[:] = first["position"], first["read_dir"], first["phase_dir"]
    head.slice_dir[:], head.patient_table_position[:] = first["slice_dir"], first["patient_table_position"]
    head.slice = image.number
    head.acquisition_time_stamp = int(first["acquisition_time_stamp"])
    head.physiology_time_stamp = [int(v) for v in first["physiology_time_stamp"]]
    head.image_index = image.index
    head.image_series_index = options.series_index
    meta = {key: [mrd.ImageMetaValue.String(value)]
            for key, value in meta_attributes(image, options, scale, top).items()}
    return mrd.StreamItem.ImageFloat(mrd.Image[np.float32](head=head, data=data.reshape(1, 1, *data.shape),
                                                           meta=meta))


def reconstruct_stream(model: Reconstructor, source: BinaryIO, target: BinaryIO, settings: Settings,
                       limits: MrdLimits = MrdLimits()) -> int:
    """Reconstruct the MRD v2 stream ``source`` with ``model`` and write its images to ``target`` as an MRD v2
    stream (the input's header, then the images); return the number of images. Nothing is written before the
    first images are ready, so a stream refused early (or holding no image acquisitions) leaves ``target``
    empty."""
    import mrd

    reader = open_reader(source, limits.max_message_bytes)
    header = decoded("the header", reader.read_header)
    assembler = SliceAssembler(STDIN, model, limits, threading.Lock(), settings)
    assembler.options = StreamOptions(data_type="float", normalise="volume")
    assembler.header(header_xml(header), "the MRD v2 header")
    writer: Any = None

    def send(images: list[SliceImage]) -> None:
        nonlocal writer
        if not images:
            return
        if writer is None:
            writer = mrd.BinaryMrdWriter(target)
            writer.write_header(header)
        writer.write_data([image_item(image, assembler.options) for image in images])
        writer._stream.flush()  # each volume's images go out at once, not when the buffer fills
        target.flush()

    for number, item in enumerate(items(reader)):
        if isinstance(item, mrd.StreamItem.Acquisition):
            send(assembler.add(*acquisition_record(item.value, number, assembler.head_dtype)))
        elif not isinstance(item, mrd.StreamItem.WaveformUint32):  # physiology: skipped
            kind = type(item).__name__.removeprefix("StreamItem.")
            raise MrdV2Error(f"{STDIN}: MRD v2 stream item {number} is {kind}: kdc reconstructs acquisitions (and "
                             "skips waveforms)")
    send(assembler.finish())
    if writer is None:
        raise MrdV2Error(f"{STDIN}: the MRD v2 stream holds no image acquisitions (all noise, navigator or "
                         "calibration scans, or none)")
    writer.close()
    target.flush()
    return assembler.images


def items(reader: Any) -> Iterator[Any]:
    """The stream items of ``reader``, a decoding failure as one line."""
    data = decoded("the stream items", reader.read_data)
    number = 0
    while True:
        item = decoded(f"stream item {number}", lambda: next(data, None))
        if item is None:
            return
        yield item
        number += 1


def reconstruct_stdin(model: Reconstructor, settings: Settings, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """``kdc reconstruct MODEL - --format mrd``: :func:`reconstruct_stream` from stdin to stdout."""
    try:
        import mrd  # noqa: F401
    except ImportError:
        raise MrdV2Error("reading MRD v2 streams needs the mrd-python package: pip install 'kdc[reconstruct]'") \
            from None
    return reconstruct_stream(model, stdin, stdout, settings)

