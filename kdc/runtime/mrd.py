"""``kdc serve MODEL --protocol mrd``: the MRD (ISMRMRD) streaming protocol that FIRE, OpenRecon and Gadgetron
clients speak, over TCP.

Per connection the client sends little-endian messages, each a uint16 id and its payload: CONFIG_FILE (1, a
1024-byte name), CONFIG_TEXT (2, uint32 length + text), METADATA_XML_TEXT (3, uint32 length + the ISMRMRD XML
header), TEXT (5, uint32 length + text), ACQUISITION (1008, the 340-byte acquisition header, trajectory, samples),
WAVEFORM (1026, skipped) and CLOSE (4). Acquisitions are buffered by slice, with the ISMRMRD file reader's rules
(:mod:`kdc.data.formats.ismrmrd`): noise readouts prewhiten the coils, navigator and other non-image readouts are
skipped and only the first repetition, contrast, phase and set are kept. When the last acquisition of a slice arrives (flag
``ACQ_LAST_IN_SLICE``; slices still open at CLOSE are reconstructed then), the slice is reconstructed as
``kdc reconstruct`` reconstructs a one-slice file (:func:`kdc.runtime.reconstruct.reconstruct_volume`: coil
compression, normalisation and the mask of the acquired lines of that slice) and sent back at once as an MRD
IMAGE; the server answers CLOSE after the client's. A stream the server cannot take gets one TEXT message
``error: ...``, its connection is closed and the server log gets one line; other connections go on.
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
#: ISMRMRD flag bit number of the last acquisition of a slice.
ACQ_LAST_IN_SLICE = 8
IMTYPE_MAGNITUDE = 1
#: uint16 images span 0..this (12 bits, as kdc's DICOM writer stores them).
UINT16_TOP = 4095
DATA_TYPES = ("uint16", "float")
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
    ``--acc``)."""

    data_type: str = "uint16"
    series_index: int = 1
    series_description: str = "KDC"
    acceleration: int | None = None

    @classmethod
    def from_config(cls, text: str) -> StreamOptions:
        try:
            config = json.loads(text)
        except ValueError:
            return cls()  # a config the server does not read (a Gadgetron chain's XML, a FIRE config name)
        if not isinstance(config, dict):
            return cls()
        known = {"data_type": str, "series_index": int, "series_description": str, "acceleration": int}
        values: dict[str, Any] = {}
        for key, kind in known.items():
            if key in config:
                if type(config[key]) is not kind:
                    raise StreamError(f"CONFIG_TEXT {key!r} is {config[key]!r}, expected a {kind.__name__}")
                values[key] = config[key]
        if values.get("data_type", "uint16") not in DATA_TYPES:
            raise StreamError(f"CONFIG_TEXT data_type {values['data_type']!r}: expected one of {list(DATA_TYPES)}")
        return cls(**values)


@dataclass
class SliceBuffer:
    """The image readouts of one slice received so far: their headers (the 340 bytes each) and float32 samples."""

    heads: list[bytes] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)


class Stream:
    """One client connection: reads its messages, reconstructs each slice when complete, sends images back."""

    def __init__(self, sock: socket.socket, name: str, model: Reconstructor, limits: MrdLimits,
                 inference: threading.Lock) -> None:
        from ismrmrd.hdf5 import acquisition_header_dtype

        self.sock, self.name, self.model, self.limits, self.inference = sock, name, model, limits, inference
        self.head_dtype = acquisition_header_dtype
        self.xml: bytes | None = None
        self.encoding: Any = None
        self.spacing: tuple[float, ...] | None = None  # mm along the rows, the columns, the slices: at the 1st image
        self.options = StreamOptions()
        self.slices: dict[int, SliceBuffer] = {}
        self.buffered = 0  # bytes of samples in self.slices
        self.noise = SliceBuffer()  # the noise readouts: they prewhiten the coils, as the file reader does
        self.images = 0

    # -- reading --------------------------------------------------------------------------------------------------
    def receive(self, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes of ``what``, else a StreamError saying the message is truncated."""
        chunks, got = [], 0
        while got < size:
            chunk = self.sock.recv(min(size - got, 1 << 20))
            if not chunk:
                raise StreamError(f"truncated message: {what} ended after {got} of {size} bytes")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

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
        while True:
            try:
                message = self.next_id()
            except Disconnected:
                if self.slices:
                    pending = sum(len(buffer.heads) for buffer in self.slices.values())
                    raise StreamError(f"client disconnected mid-slice ({pending} acquisition(s) of slice(s) "
                                      f"{sorted(self.slices)} not reconstructed)") from None
                return f"client disconnected without CLOSE after {self.images} image(s)"
            if message == CLOSE:
                for number in sorted(self.slices):
                    self.reconstruct(number)
                self.sock.sendall(struct.pack("<H", CLOSE))
                return f"closed after {self.images} image(s)"
            self.handle(message)

    def handle(self, message: int) -> None:
        if message == CONFIG_FILE:
            self.receive(CONFIG_FILE_BYTES, "CONFIG_FILE")  # one model is served: the name picks nothing
        elif message == CONFIG_TEXT:
            self.options = StreamOptions.from_config(self.text("CONFIG_TEXT"))
        elif message == HEADER:
            self.xml = self.receive(self.length("the XML header"), "the XML header")
            self.encoding = cartesian_encoding(self.name, self.xml, "the MRD XML header")
            self.spacing = None
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
        if self.encoding is None:
            raise StreamError("an ACQUISITION arrived before the XML header (METADATA_XML_TEXT, id 3)")
        raw = self.receive(ACQUISITION_HEADER_BYTES, "an ACQUISITION header")
        head = np.frombuffer(raw, self.head_dtype)
        samples, channels = int(head["number_of_samples"][0]), int(head["active_channels"][0])
        trajectory = samples * int(head["trajectory_dimensions"][0]) * 4
        data = samples * channels * 8
        self.check_size(trajectory + data, "an ACQUISITION")
        self.receive(trajectory, "an ACQUISITION's trajectory")
        values = np.frombuffer(self.receive(data, "an ACQUISITION's samples"), np.float32)
        if noise_readouts(head)[0]:
            if self.buffered + values.nbytes > self.limits.max_open_slices_bytes:
                raise StreamError(f"the noise readouts and open slices hold more than "
                                  f"{self.limits.max_open_slices_bytes} bytes of samples (--max-open-slices-mb)")
            self.noise.heads.append(raw)
            self.noise.samples.append(values)
            self.buffered += values.nbytes  # kept for the whole stream
            return
        if not (image_readouts(head) & first_counters(head))[0]:
            return
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
        if int(head["flags"][0]) & (1 << (ACQ_LAST_IN_SLICE - 1)):
            self.reconstruct(number)

    # -- reconstruction -------------------------------------------------------------------------------------------
    def reconstruct(self, number: int) -> None:
        """Reconstruct slice ``number`` as ``kdc reconstruct`` reconstructs a one-slice file and send its image."""
        buffer = self.slices.pop(number)
        self.buffered -= sum(values.nbytes for values in buffer.samples)
        heads = np.frombuffer(b"".join(buffer.heads), self.head_dtype)
        lengths = np.array([values.size for values in buffer.samples])
        assert self.xml is not None
        layout = place_heads(self.name, self.xml, self.encoding, np.arange(len(heads)), heads, lengths,
                             data=f"the acquisitions of slice {number}")
        if self.noise.heads:
            noise = np.frombuffer(b"".join(self.noise.heads), self.head_dtype)
            layout = replace(layout, whitening=prewhitening(self.name, layout, noise, self.noise.samples,
                                                            float(heads["sample_time_us"][0]), "the stream's"))
        readouts = zip(buffer.samples, np.zeros(len(heads), np.int64), layout.lines, layout.offsets)
        kspace = grid_kspace(layout, fill_grid(layout, readouts, 1))
        volume = checked(RawVolume(Path(f"{self.name} slice {number}"), f"slice{number}", kspace, True,
                                   line_mask(layout), phase_encode_axis=IsmrmrdReader.phase_encode_axis))
        with self.inference:
            result = reconstruct_volume(volume, self.model, Settings(acceleration=self.options.acceleration))
        self.images += 1
        image = self.image(result.output.image[0], heads[0], number,
                           f"kdc {self.model.name}, {result.output.provenance.acceleration:g}x "
                           f"{result.output.provenance.mask} mask")
        message = bytearray(struct.pack("<H", IMAGE))
        image.serialize_into(message.extend)
        self.sock.sendall(message)

    def image(self, pixels: np.ndarray, first: np.ndarray, number: int, comment: str) -> Any:
        """The MRD image of one slice, placed as its first readout, with the meta a scanner displays it by."""
        import ismrmrd

        if self.spacing is None:  # the header's matrix is known to hold the readouts by now: no division by 0
            self.spacing = header_geometry(self.xml or b"", rows="y").spacing
        spacing = self.spacing
        height, width = pixels.shape
        peak = float(pixels.max())
        if self.options.data_type == "uint16":  # stored x scale = the magnitude
            scale = peak / UINT16_TOP if peak > 0 else 1.0
            data, top = np.rint(pixels / scale).astype(np.uint16), float(UINT16_TOP)
        else:
            scale, data, top = 1.0, pixels.astype(np.float32), peak
        head = ismrmrd.ImageHeader()
        head.version = 1
        head.measurement_uid = int(first["measurement_uid"])
        head.field_of_view = (ctypes.c_float * 3)(spacing[1] * width, spacing[0] * height, spacing[2])
        for key in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
            getattr(head, key)[:] = [float(v) for v in first[key]]
        head.slice = number
        head.acquisition_time_stamp = int(first["acquisition_time_stamp"])
        head.physiology_time_stamp[:] = [int(v) for v in first["physiology_time_stamp"]]
        head.image_type = IMTYPE_MAGNITUDE
        head.image_index = self.images
        head.image_series_index = self.options.series_index
        meta = ismrmrd.Meta({"DataRole": "Image", "ImageProcessingHistory": ["KDC"],
                             "WindowCenter": f"{top / 2:.6g}", "WindowWidth": f"{top:.6g}",
                             "ImageComments": comment, "SequenceDescriptionAdditional": self.options.series_description,
                             "SeriesDescription": self.options.series_description, "KdcScale": f"{scale:.9g}",
                             "Keep_image_geometry": "1"})
        return ismrmrd.Image(head=bytes(head), data=data.reshape(1, 1, height, width), meta=meta)


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
