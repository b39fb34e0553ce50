"""``kdc serve MODEL --protocol mrd``: the MRD (ISMRMRD) streaming protocol that FIRE, OpenRecon and Gadgetron
clients speak, over TCP.

Per connection the client sends little-endian messages, each a uint16 id and its payload: CONFIG_FILE (1, a
1024-byte name), CONFIG_TEXT (2, uint32 length + text), METADATA_XML_TEXT (3, uint32 length + the ISMRMRD XML
header), TEXT (5, uint32 length + text), ACQUISITION (1008, the 340-byte acquisition header, trajectory, samples),
WAVEFORM (1026, skipped) and CLOSE (4). :class:`Stream` reads them and hands the acquisitions to a
:class:`SliceAssembler`, which the MRD v2 pipe (:mod:`kdc.runtime.mrd_v2`) shares: acquisitions are buffered by
slice with the ISMRMRD file reader's rules (:mod:`kdc.data.formats.ismrmrd`: noise readouts prewhiten the coils,
navigator and other non-image readouts are skipped, only the first repetition, contrast, phase and set kept); when
the last acquisition of a slice arrives (flag ``ACQ_LAST_IN_SLICE``, or by the encoding limits in a stream without
slice flags; slices still open at CLOSE are reconstructed then), the slice is reconstructed as ``kdc reconstruct``
reconstructs a one-slice file (:func:`kdc.runtime.reconstruct.reconstruct_volume`) and sent back at once as an MRD
IMAGE. With ``"normalise":
"volume"`` in the config the slices are held and reconstructed as one volume, giving ``kdc reconstruct``'s images
of the whole file. The server answers CLOSE after the client's. A stream the server cannot take gets one TEXT
message ``error: ...``, its connection is closed and the server log gets one line; other connections go on.
"""

from __future__ import annotations

import ctypes
import json
import signal
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdc.data.formats.base import header_geometry
from kdc.data.formats.ismrmrd import (IsmrmrdReader, cartesian_encoding, fill_grid, first_counters, grid_kspace,
                                      image_readouts, line_mask, noise_readouts, place_heads, prewhitening)
from kdc.errors import KdcError
from kdc.runtime.readers import RawVolume, checked
from kdc.runtime.reconstruct import Settings, reconstruct_volume
from kdc.runtime.session import Reconstructor

CONFIG_FILE, CONFIG_TEXT, HEADER, CLOSE, TEXT = 1, 2, 3, 4, 5
ACQUISITION, IMAGE, WAVEFORM = 1008, 1022, 1026
CONFIG_FILE_BYTES = 1024
ACQUISITION_HEADER_BYTES = 340
WAVEFORM_HEADER_BYTES = 40
WAVEFORM_SAMPLES_AT = 28  # uint16 number_of_samples, then uint16 channels
#: ISMRMRD flag bit numbers of the first and the last acquisition of a slice, and their masks.
ACQ_FIRST_IN_SLICE, ACQ_LAST_IN_SLICE = 7, 8
LAST_IN_SLICE = 1 << (ACQ_LAST_IN_SLICE - 1)
SLICE_FLAGS = LAST_IN_SLICE | 1 << (ACQ_FIRST_IN_SLICE - 1)
IMTYPE_MAGNITUDE = 1
#: uint16 images span 0..this (12 bits, as kdc's DICOM writer stores them).
UINT16_TOP = 4095
DATA_TYPES = ("uint16", "float")
NORMALISATIONS = ("slice", "volume")
#: After an error: how long, and how much, the server reads of what the client still sends before closing.
DRAIN_SECONDS, DRAIN_BYTES = 1.0, 64 << 20


class StreamError(KdcError):
    """A stream the server cannot take: answered with one TEXT message, then the connection is closed."""


class Disconnected(Exception):
    """The client closed its side between two messages."""


@dataclass(frozen=True)
class MrdLimits:
    """Bounds of one connection: the largest message payload, the acquisitions buffered for one slice, the samples
    buffered for all its open slices (interleaved multi-slice scans keep every slice open), the seconds the client
    may stay silent, and how many connections are served at once (the next ones get a busy TEXT)."""

    max_message_bytes: int = 64 << 20
    max_acquisitions_per_slice: int = 8192
    max_open_slices_bytes: int = 1 << 30
    idle_timeout: float = 60.0
    max_connections: int = 4


@dataclass(frozen=True)
class StreamOptions:
    """What the client asks for in its CONFIG_TEXT (a JSON object; any other text is ignored): ``data_type``
    ``uint16`` (scaled to 0..4095; the magnitude is the stored value times the meta ``KdcScale``) or ``float``;
    ``series_index``; ``series_description``; ``acceleration`` (undersample fully sampled data retrospectively, as
    ``--acc``); ``normalise``: ``slice`` (each slice coil-compressed and normalised on its own, its image sent when
    it is complete) or ``volume`` (as ``kdc reconstruct`` does a file: the slices are held until the last one the
    encoding limits count, or the end, then reconstructed as one volume)."""

    data_type: str = "uint16"
    series_index: int = 1
    series_description: str = "KDC"
    acceleration: int | None = None
    normalise: str = "slice"

    @classmethod
    def from_config(cls, text: str) -> StreamOptions:
        try:
            config = json.loads(text)
        except ValueError:
            return cls()  # a config the server does not read (a Gadgetron chain's XML, a FIRE config name)
        if not isinstance(config, dict):
            return cls()
        known = {"data_type": str, "series_index": int, "series_description": str, "acceleration": int,
                 "normalise": str}
        values: dict[str, Any] = {}
        for key, kind in known.items():
            if key in config:
                if type(config[key]) is not kind:
                    raise StreamError(f"CONFIG_TEXT {key!r} is {config[key]!r}, expected a {kind.__name__}")
                values[key] = config[key]
        if values.get("data_type", "uint16") not in DATA_TYPES:
            raise StreamError(f"CONFIG_TEXT data_type {values['data_type']!r}: expected one of {list(DATA_TYPES)}")
        if values.get("normalise", "slice") not in NORMALISATIONS:
            raise StreamError(f"CONFIG_TEXT normalise {values['normalise']!r}: expected one of "
                              f"{list(NORMALISATIONS)}")
        return cls(**values)


@dataclass
class SliceBuffer:
    """The image readouts of one slice received so far: their headers (the 340 bytes each), float32 samples, and
    which of the encoding limits' first and last lines they hold."""

    heads: list[bytes] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    edges: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class SliceImage:
    """One reconstructed slice: its magnitude ``(H, W)``, the header record of its first readout, its slice number,
    the image index (1, 2, ... per stream), the field of view (mm, along x, y, z) and a comment."""

    pixels: np.ndarray
    first: np.ndarray
    number: int
    index: int
    field_of_view: tuple[float, float, float]
    comment: str


class SliceAssembler:
    """Acquisitions in, images out, whatever the wire format: buffers the image readouts by slice with the ISMRMRD
    file reader's rules and reconstructs each slice when complete (or, with ``"normalise": "volume"``, the volume
    when its last slice is complete).

    A slice is complete at its acquisition flagged ``ACQ_LAST_IN_SLICE``. A stream that has shown no slice flag
    (neither ``ACQ_FIRST_IN_SLICE`` nor ``ACQ_LAST_IN_SLICE``) is split by the header's encoding limits instead: a
    slice is complete when it holds the readouts of the first and the last line (``kspace_encoding_step_1``
    minimum and maximum, of the last average if the limits count averages) and one of them has just arrived, which
    ends linear, reverse and centric orders alike. Slices still open at the end are reconstructed then."""

    def __init__(self, name: str, model: Reconstructor, limits: MrdLimits, inference: threading.Lock,
                 settings: Settings = Settings()) -> None:
        from ismrmrd.hdf5 import acquisition_header_dtype

        self.name, self.model, self.limits, self.inference = name, model, limits, inference
        self.settings = settings  # kdc reconstruct's: the mask of fully sampled data (the config's acceleration first)
        self.head_dtype = acquisition_header_dtype
        self.xml: bytes | None = None
        self.encoding: Any = None
        self.spacing = (1.0, 1.0, 1.0)  # mm along the rows, the columns, the slices (from the header)
        self.edges: tuple[int, int] | None = None  # the first and last line by the encoding limits
        self.last_average: int | None = None
        self.slice_count: int | None = None  # by the encoding limits
        self.flagged = False  # the stream carries ACQ_FIRST_IN_SLICE / ACQ_LAST_IN_SLICE
        self.options = StreamOptions()
        self.slices: dict[int, SliceBuffer] = {}
        self.complete: set[int] = set()  # volume normalisation: complete slices waiting for the others
        self.buffered = 0  # bytes of samples in self.slices and self.noise
        self.noise = SliceBuffer()  # the noise readouts: they prewhiten the coils, as the file reader's do
        self.images = 0

    def header(self, xml: bytes, where: str) -> None:
        """Check the ISMRMRD XML header (as ``kdc reconstruct`` checks a file's) and read its encoding limits."""
        self.encoding = cartesian_encoding(self.name, xml, where)
        self.xml = xml
        self.spacing = header_geometry(xml, rows="y").spacing
        limits = self.encoding.encodingLimits
        lines, average, slices = (getattr(limits, key, None) for key in ("kspace_encoding_step_1", "average",
                                                                         "slice"))
        edges = None if lines is None or lines.maximum is None else (int(lines.minimum or 0), int(lines.maximum))
        self.edges = edges if edges is not None and edges[0] < edges[1] else None  # limits of 0..0 say nothing
        self.last_average = None if average is None or average.maximum is None else int(average.maximum)
        self.slice_count = None if slices is None or slices.maximum is None else int(slices.maximum) + 1

    @property
    def pending(self) -> str:
        """The acquisitions buffered and their slices, in words."""
        count = sum(len(buffer.heads) for buffer in self.slices.values())
        return f"{count} acquisition(s) of slice(s) {sorted(self.slices)}"

    def add(self, raw: bytes, values: np.ndarray) -> list[SliceImage]:
        """Take one acquisition (its 340-byte header and float32 samples); return the images it completes."""
        if self.encoding is None:
            raise StreamError("an ACQUISITION arrived before the XML header (METADATA_XML_TEXT, id 3)")
        head = np.frombuffer(raw, self.head_dtype)
        flags = int(head["flags"][0])
        self.flagged |= bool(flags & SLICE_FLAGS)
        if noise_readouts(head)[0]:
            if self.buffered + values.nbytes > self.limits.max_open_slices_bytes:
                raise StreamError(f"the noise readouts and open slices hold more than "
                                  f"{self.limits.max_open_slices_bytes} bytes of samples (--max-open-slices-mb)")
            self.noise.heads.append(raw)
            self.noise.samples.append(values)
            self.buffered += values.nbytes  # kept for the whole stream
            return []
        if not (image_readouts(head) & first_counters(head))[0]:
            return []
        number = int(head["idx"]["slice"][0])
        buffer = self.slices.setdefault(number, SliceBuffer())
        if len(buffer.heads) >= self.limits.max_acquisitions_per_slice:
            raise StreamError(f"slice {number} has more than {self.limits.max_acquisitions_per_slice} acquisitions "
                              "(--max-acquisitions-per-slice)")
        if self.buffered + values.nbytes > self.limits.max_open_slices_bytes:
            raise StreamError(f"the open slices {sorted(self.slices)} hold more than "
                              f"{self.limits.max_open_slices_bytes} bytes of samples (--max-open-slices-mb)")
        buffer.heads.append(raw)
        buffer.samples.append(values)
        self.buffered += values.nbytes
        if flags & LAST_IN_SLICE or (not self.flagged and self.ends_by_limits(buffer, head)):
            return self.completed(number)
        return []

    def ends_by_limits(self, buffer: SliceBuffer, head: np.ndarray) -> bool:
        """Whether ``head`` completes its slice by the encoding limits (a stream without slice flags)."""
        line = int(head["idx"]["kspace_encode_step_1"][0])
        if self.edges is None or line not in self.edges:
            return False
        if self.last_average is not None and int(head["idx"]["average"][0]) != self.last_average:
            return False
        buffer.edges.add(line)
        return buffer.edges == set(self.edges)

    def completed(self, number: int) -> list[SliceImage]:
        if self.options.normalise == "slice":
            return self.reconstruct([number])
        self.complete.add(number)
        if self.slice_count is not None and len(self.complete) >= self.slice_count:
            return self.finish()
        return []

    def finish(self) -> list[SliceImage]:
        """The images of the slices still open (at the end of the stream)."""
        if not self.slices:
            return []
        if self.options.normalise == "volume":
            return self.reconstruct(sorted(self.slices))
        return [image for number in sorted(self.slices) for image in self.reconstruct([number])]

    def reconstruct(self, numbers: list[int]) -> list[SliceImage]:
        """Reconstruct slices ``numbers`` as ``kdc reconstruct`` reconstructs a file holding their acquisitions."""
        buffers = [self.slices.pop(number) for number in numbers]
        self.complete.difference_update(numbers)
        samples = [values for buffer in buffers for values in buffer.samples]
        self.buffered -= sum(values.nbytes for values in samples)
        heads = np.frombuffer(b"".join(raw for buffer in buffers for raw in buffer.heads), self.head_dtype)
        lengths = np.array([values.size for values in samples])
        assert self.xml is not None
        what = f"slice {numbers[0]}" if len(numbers) == 1 else "the volume"
        layout = place_heads(self.name, self.xml, self.encoding, np.arange(len(heads)), heads, lengths,
                             data=f"the acquisitions of {what}")
        if self.noise.heads:
            noise = np.frombuffer(b"".join(self.noise.heads), self.head_dtype)
            layout = replace(layout, whitening=prewhitening(self.name, layout, noise, self.noise.samples,
                                                            float(heads["sample_time_us"][0]), "the stream's"))
        readouts = zip(samples, layout.slices, layout.lines, layout.offsets)
        kspace = grid_kspace(layout, fill_grid(layout, readouts, layout.slice_count))
        volume = checked(RawVolume(Path(f"{self.name} {what}"), what.replace(" ", ""), kspace, True,
                                   line_mask(layout), phase_encode_axis=IsmrmrdReader.phase_encode_axis))
        settings = self.settings
        if self.options.acceleration is not None:
            settings = replace(settings, acceleration=self.options.acceleration)
        with self.inference:
            result = reconstruct_volume(volume, self.model, settings)
        provenance = result.output.provenance
        comment = f"kdc {self.model.name}, {provenance.acceleration:g}x {provenance.mask} mask"
        numbers_in_order, first = np.unique(heads["idx"]["slice"], return_index=True)
        height, width = result.output.image.shape[-2:]
        field_of_view = (self.spacing[1] * width, self.spacing[0] * height, self.spacing[2])
        images = []
        for pixels, number, row in zip(result.output.image, numbers_in_order, first):
            self.images += 1
            images.append(SliceImage(pixels, heads[row], int(number), self.images, field_of_view, comment))
        return images


def stored_pixels(pixels: np.ndarray, data_type: str) -> tuple[np.ndarray, float, float]:
    """Pixels as stored: uint16 scaled so that the peak is :data:`UINT16_TOP`, or float32; the factor from stored
    value to magnitude; the stored peak (the window width)."""
    peak = float(pixels.max())
    if data_type == "uint16":
        scale = peak / UINT16_TOP if peak > 0 else 1.0
        return np.rint(pixels / scale).astype(np.uint16), scale, float(UINT16_TOP)
    return pixels.astype(np.float32, copy=False), 1.0, peak


def meta_attributes(image: SliceImage, options: StreamOptions, scale: float, top: float) -> dict[str, str]:
    """The meta attributes a scanner displays an image by (ISMRMRD meta, string values)."""
    return {"DataRole": "Image", "ImageProcessingHistory": "KDC", "WindowCenter": f"{top / 2:.6g}",
            "WindowWidth": f"{top:.6g}", "ImageComments": image.comment,
            "SequenceDescriptionAdditional": options.series_description,
            "SeriesDescription": options.series_description, "KdcScale": f"{scale:.9g}", "Keep_image_geometry": "1"}


class Stream:
    """One client connection: reads its MRD (v1) messages, hands acquisitions to a :class:`SliceAssembler` and
    sends the images back as they are reconstructed."""

    def __init__(self, sock: socket.socket, name: str, model: Reconstructor, limits: MrdLimits,
                 inference: threading.Lock) -> None:
        self.sock, self.name, self.limits = sock, name, limits
        self.assembler = SliceAssembler(name, model, limits, inference)

    # -- reading --------------------------------------------------------------------------------------------------
    def receive(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes of ``what``, else a StreamError saying the message is truncated."""
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            count = self.sock.recv_into(view[got:], size - got)
            if not count:
                raise StreamError(f"truncated message: {what} ended after {got} of {size} bytes")
            got += count
        return bytes(buffer)

    def length(self, what: str) -> int:
        (size,) = struct.unpack("<I", self.receive(4, f"the length of {what}"))
        self.check_size(size, what)
        return size

    def check_size(self, size: int, what: str) -> None:
        if size > self.limits.max_message_bytes:
            raise StreamError(f"{what} declares {size} bytes, above the server's limit of "
                              f"{self.limits.max_message_bytes} (--max-message-mb)")

    def next_id(self) -> int:
        first = self.sock.recv(2)
        if not first:
            raise Disconnected
        if len(first) == 1:
            first += self.receive(1, "a message id")
        return struct.unpack("<H", first)[0]

    # -- the conversation -----------------------------------------------------------------------------------------
    def run(self) -> str:
        """Serve the connection until CLOSE; return the line the server logs."""
        assembler = self.assembler
        while True:
            try:
                message = self.next_id()
            except Disconnected:
                if assembler.slices:
                    raise StreamError(f"client disconnected mid-slice ({assembler.pending} not reconstructed)") \
                        from None
                return f"client disconnected without CLOSE after {assembler.images} image(s)"
            if message == CLOSE:
                self.send(assembler.finish())
                self.sock.sendall(struct.pack("<H", CLOSE))
                return f"closed after {assembler.images} image(s)"
            self.handle(message)

    def handle(self, message: int) -> None:
        if message == CONFIG_FILE:
            self.receive(CONFIG_FILE_BYTES, "CONFIG_FILE")  # one model is served: the name picks nothing
        elif message == CONFIG_TEXT:
            self.assembler.options = StreamOptions.from_config(self.text("CONFIG_TEXT"))
        elif message == HEADER:
            self.assembler.header(self.receive(self.length("the XML header"), "the XML header"), "the MRD XML header")
        elif message == TEXT:
            self.text("TEXT")
        elif message == ACQUISITION:
            self.acquisition()
        elif message == WAVEFORM:
            head = self.receive(WAVEFORM_HEADER_BYTES, "a WAVEFORM header")
            samples, channels = struct.unpack_from("<HH", head, WAVEFORM_SAMPLES_AT)
            self.check_size(4 * samples * channels, "a WAVEFORM")
            self.receive(4 * samples * channels, "a WAVEFORM's samples")
        elif message == IMAGE:
            raise StreamError("the client sent an IMAGE: this server reconstructs acquisitions")
        else:
            raise StreamError(f"unknown message id {message}: expected 1-5, 1008 (acquisition) or 1026 (waveform)")

    def text(self, what: str) -> str:
        return self.receive(self.length(what), what).decode("utf-8", errors="replace")

    def acquisition(self) -> None:
        raw = self.receive(ACQUISITION_HEADER_BYTES, "an ACQUISITION header")
        head = np.frombuffer(raw, self.assembler.head_dtype)
        samples, channels = int(head["number_of_samples"][0]), int(head["active_channels"][0])
        trajectory, data = samples * int(head["trajectory_dimensions"][0]) * 4, samples * channels * 8
        self.check_size(trajectory + data, "an ACQUISITION")
        self.receive(trajectory, "an ACQUISITION's trajectory")
        values = np.frombuffer(self.receive(data, "an ACQUISITION's samples"), np.float32)
        self.send(self.assembler.add(raw, values))

    def send(self, images: list[SliceImage]) -> None:
        for image in images:
            message = bytearray(struct.pack("<H", IMAGE))
            v1_image(image, self.assembler.options).serialize_into(message.extend)
            self.sock.sendall(message)


def v1_image(image: SliceImage, options: StreamOptions) -> Any:
    """The MRD (v1, ``ismrmrd`` package) image of a slice, placed as its first readout."""
    import ismrmrd

    data, scale, top = stored_pixels(image.pixels, options.data_type)
    first = image.first
    head = ismrmrd.ImageHeader()
    head.version = 1
    head.measurement_uid = int(first["measurement_uid"])
    head.field_of_view = (ctypes.c_float * 3)(*image.field_of_view)
    for key in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
        getattr(head, key)[:] = [float(v) for v in first[key]]
    head.slice = image.number
    head.acquisition_time_stamp = int(first["acquisition_time_stamp"])
    head.physiology_time_stamp[:] = [int(v) for v in first["physiology_time_stamp"]]
    head.image_type = IMTYPE_MAGNITUDE
    head.image_index = image.index
    head.image_series_index = options.series_index
    meta = ismrmrd.Meta(meta_attributes(image, options, scale, top))
    return ismrmrd.Image(head=bytes(head), data=data.reshape(1, 1, *data.shape), meta=meta)


class MrdServer(socketserver.ThreadingTCPServer):
    """The MRD stream server: one thread per connection, at most ``limits.max_connections`` served at once, the
    model's inference one slice at a time."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, model: Reconstructor, host: str = "127.0.0.1", port: int = 9002,
                 limits: MrdLimits = MrdLimits(), log: Callable[[str], None] = lambda line: None) -> None:
        self.model, self.limits, self.log = model, limits, log
        self.inference = threading.Lock()
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        super().__init__((host, port), Handler)


class Handler(socketserver.BaseRequestHandler):
    server: MrdServer

    def handle(self) -> None:
        server, sock = self.server, self.request
        name = f"mrd {self.client_address[0]}:{self.client_address[1]}"
        if not server.slots.acquire(blocking=False):
            server.log(f"{name}: refused, {server.limits.max_connections} connections already served")
            send_error(sock, f"server busy: {server.limits.max_connections} connections already served")
            return
        try:
            sock.settimeout(server.limits.idle_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # an image goes out whole, at once
            stream = Stream(sock, name, server.model, server.limits, server.inference)
            try:
                server.log(f"{name}: {stream.run()}")
            except KdcError as err:
                refuse(server, sock, name, str(err))
            except TimeoutError:
                refuse(server, sock, name, f"idle for {server.limits.idle_timeout:g} s (--idle-timeout)")
            except OSError as err:
                server.log(f"{name}: connection lost: {err}")
            except Exception as err:  # a runtime failure: one line to the client and the log, then the next client
                refuse(server, sock, name, f"internal error: {type(err).__name__}: {err}")
        finally:
            server.slots.release()


def refuse(server: MrdServer, sock: socket.socket, name: str, message: str) -> None:
    """Log ``message`` (one line), then send it to the client."""
    server.log(f"{name}: error: {message}")
    send_error(sock, message)


def send_error(sock: socket.socket, message: str) -> None:
    """Send ``error: message`` as an MRD TEXT message and CLOSE, if the client still listens, then read what the
    client still sends (for at most :data:`DRAIN_SECONDS` of silence and :data:`DRAIN_BYTES`): closing a socket
    with unread data resets the connection, and the client would lose the message."""
    text = f"error: {message}".encode()
    try:
        sock.sendall(struct.pack("<HI", TEXT, len(text)) + text + struct.pack("<H", CLOSE))
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(DRAIN_SECONDS)
        drained = 0
        while drained < DRAIN_BYTES and (chunk := sock.recv(1 << 16)):
            drained += len(chunk)
    except OSError:
        pass


def run_mrd_server(model: Reconstructor, host: str, port: int, limits: MrdLimits,
                   log: Callable[[str], None]) -> None:
    """Serve ``model`` over MRD until interrupted."""
    with MrdServer(model, host, port, limits, log) as server:
        stop = lambda *_: threading.Thread(target=server.shutdown).start()  # noqa: E731  (shutdown waits for the loop)
        signal.signal(signal.SIGTERM, stop)
        log(f"serving {model.name} ({model.backend}) over MRD at {host}:{server.server_address[1]}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        log("stopped")
