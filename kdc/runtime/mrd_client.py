"""``kdc mrd-client``: stream an ISMRMRD file to an MRD server (``kdc serve --protocol mrd``, or any FIRE-style
reconstruction) and write the images it sends back as ISMRMRD image groups, so that the server can be tried
without a scanner.

The file is read with kdc's h5 checks (:func:`kdc.data.formats.open_h5`: no external links, declared sizes checked)
and sent with the ``ismrmrd`` package's serialisation, acquisition by acquisition, while a second thread receives
the images; the output is written under a temporary name and renamed when the server has closed the stream.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdc._io import atomic_path
from kdc.data.formats import open_h5
from kdc.data.formats.base import header_text
from kdc.data.formats.ismrmrd import BLOCK_ROWS, acquisitions
from kdc.errors import KdcError
from kdc.runtime.mrd import CONFIG_TEXT, HEADER

#: Image group of ``--out`` the images of series ``n`` go to.
IMAGE_GROUP = "image_{}"


class MrdClientError(KdcError):
    """The server refused the stream or broke off."""


@dataclass
class Received:
    """What the server sent back: images, TEXT messages, and whether it closed the stream with CLOSE."""

    images: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    closed: bool = False
    failure: str | None = None


def receive(sock: socket.socket, received: Received) -> None:
    """Read the server's messages (images, TEXT) until its CLOSE or the end of the connection."""
    import ismrmrd
    from ismrmrd.serialization import ProtocolDeserializer

    try:
        with sock.makefile("rb") as stream:
            for message in ProtocolDeserializer(stream).deserialize():
                if isinstance(message, ismrmrd.Image):
                    received.images.append(message)
                elif isinstance(message, str):
                    received.texts.append(message)
            received.closed = True
    except (EOFError, OSError, ValueError) as err:
        received.failure = f"{type(err).__name__}: {err}"


def send_file(sock: socket.socket, path: Path, config: str | None) -> int:
    """Send ``path``'s header and acquisitions, then CLOSE; return the number of acquisitions sent."""
    import ismrmrd
    from ismrmrd.serialization import ProtocolSerializer

    sent = 0
    with open_h5(path) as file, sock.makefile("wb") as stream:
        xml = header_text(file, "dataset/xml")
        data = acquisitions(file)
        serializer = ProtocolSerializer(stream)
        for message, text in ((CONFIG_TEXT, None if config is None else config.encode()), (HEADER, xml)):
            if text is not None:
                stream.write(struct.pack("<HI", message, len(text)) + text)
        for start in range(0, data.shape[0], BLOCK_ROWS):
            for row in data[start : start + BLOCK_ROWS]:
                acquisition = ismrmrd.Acquisition(row["head"].tobytes())
                samples = np.asarray(row["data"], np.float32).view(np.complex64)
                if samples.size != acquisition.active_channels * acquisition.number_of_samples:
                    raise MrdClientError(f"{path}: 'dataset/data' acquisition {sent} holds {samples.size} samples, "
                                         f"expected {acquisition.active_channels} x {acquisition.number_of_samples}")
                acquisition.data[:] = samples.reshape(acquisition.data.shape)
                trajectory = np.asarray(row["traj"], np.float32)
                if trajectory.size == acquisition.traj.size:
                    acquisition.traj[:] = trajectory.reshape(acquisition.traj.shape)
                serializer.serialize(acquisition)
                sent += 1
        serializer.close()
    return sent


def stream_file(path: Path, out: Path, host: str = "127.0.0.1", port: int = 9002, config: str | None = None,
                timeout: float = 300.0, overwrite: bool = False) -> Received:
    """Stream ``path`` to the MRD server at ``host:port`` and write the images it returns to ``out``."""
    import ismrmrd

    if out.exists() and not overwrite:
        raise MrdClientError(f"{out} exists: choose another --out or pass --overwrite")
    if out.resolve() == path.resolve():
        raise MrdClientError(f"--out {out} is the input file")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise MrdClientError(f"cannot connect to an MRD server at {host}:{port}: {err.strerror or err}") from None
    received = Received()
    with sock:
        listener = threading.Thread(target=receive, args=(sock, received), daemon=True)
        listener.start()
        try:
            send_file(sock, path, config)
        except OSError:
            pass  # the server closed the connection: its TEXT says why
        listener.join(timeout)
    errors = [text for text in received.texts if text.startswith("error:")]
    if errors:
        raise MrdClientError(f"server {host}:{port}: {errors[0].removeprefix('error:').strip()}")
    if not received.closed:
        raise MrdClientError(f"server {host}:{port} broke off the stream ({received.failure or 'timed out'}) after "
                             f"{len(received.images)} image(s)")
    with atomic_path(out) as temporary:
        dataset = ismrmrd.Dataset(str(temporary), "dataset", mode="w")
        for image in received.images:
            dataset.append_image(IMAGE_GROUP.format(image.image_series_index), image)
        dataset.close()
    return received
