"""``kdc serve --protocol mrd`` and ``kdc mrd-client``: a real MRD server on 127.0.0.1, driven by a client built on
the ``ismrmrd`` package's serialisation (not kdc's), on files written by Debian's ismrmrd-tools."""

from __future__ import annotations

import contextlib
import io
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

import kdc.runtime as rt
from kdc.runtime.mrd import MrdLimits, MrdServer
from tests.ismrmrd_files import edit_header, generate, slices_from_repetitions

from .helpers import BLOCK_TORCH, free_port
from .test_reconstruct import kdc_reconstruct
from .test_reconstruct_ismrmrd import (MATRIX, PHASE_DIR, POSITION, READ_DIR, complex_model_file,  # noqa: F401
                                       scan, square_model)

ismrmrd = pytest.importorskip("ismrmrd")
from ismrmrd.serialization import ConfigText, ProtocolDeserializer, ProtocolSerializer  # noqa: E402

CLOSE = struct.pack("<H", 4)
FLOAT = '{"data_type": "float"}'


@contextlib.contextmanager
def serving(model: Path, **limits) -> Iterator[tuple[int, list[str]]]:
    """An MRD server of ``model`` on an ephemeral port of 127.0.0.1, and the lines it logs."""
    logs: list[str] = []
    server = MrdServer(rt.load(model), port=0, limits=MrdLimits(**limits), log=logs.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], logs
    finally:
        server.shutdown()
        server.server_close()


def serialised(message) -> bytes:
    buffer = io.BytesIO()
    ProtocolSerializer(buffer).serialize(message)
    return buffer.getvalue()


def messages(path: Path, config: str = FLOAT, xml: str | None = None) -> list[bytes]:
    """The MRD messages of an ISMRMRD file as the ismrmrd package serialises them: CONFIG_TEXT, the XML header
    (``xml`` instead if given), then every acquisition; no CLOSE."""
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    header = ismrmrd.xsd.CreateFromDocument(xml or dataset.read_xml_header())
    stream = [serialised(ConfigText(config)), serialised(header)]
    stream += [serialised(dataset.read_acquisition(i)) for i in range(dataset.number_of_acquisitions())]
    dataset.close()
    return stream


def exchange(port: int, payload: bytes, shutdown: bool = True) -> list:
    """Send ``payload``, then read the server's messages (images, TEXT) until its CLOSE."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as stream:
            return list(ProtocolDeserializer(stream).deserialize())


def reconstructed(model: Path, source: Path, out: Path) -> np.ndarray:
    """``kdc reconstruct``'s images of ``source`` (its h5 output)."""
    result = kdc_reconstruct(model, source, "--out", out, "-f", "h5", "--threads", "1")
    assert result.exit_code == 0, result.output
    with h5py.File(out / f"{source.stem}.h5") as file:
        return file["reconstruction"][()]


def assert_close(actual: np.ndarray, expected: np.ndarray, slack: float = 0.0) -> None:
    assert np.abs(actual - expected).max() <= 1e-6 * np.abs(expected).max() + slack


@pytest.mark.parametrize(("coils", "model_fixture"), [(1, "square_model"), (8, "complex_model_file")])
def test_the_image_equals_kdc_reconstruct_and_is_placed_as_the_acquisitions(tmp_path, request, coils, model_fixture):
    """A scan with noise readouts (-C) and 4 repetitions (-a 4): one image, of repetition 0, as kdc reconstruct's."""
    model = request.getfixturevalue(model_fixture)
    source = scan(tmp_path / "scan.h5", coils, "-C")
    with h5py.File(source) as file:
        assert (file["dataset/data"]["head"]["flags"] & (1 << 18)).any()  # ACQ_IS_NOISE_MEASUREMENT
    expected = reconstructed(model, source, tmp_path / "out")
    with serving(model) as (port, logs):
        answers = exchange(port, b"".join(messages(source)) + CLOSE)
    (image,) = answers
    assert isinstance(image, ismrmrd.Image) and image.data.dtype == np.float32
    assert_close(image.data[0, 0], expected[0])
    head = image.getHead()
    assert tuple(head.matrix_size) == (MATRIX, MATRIX, 1) and head.channels == 1
    np.testing.assert_allclose(head.field_of_view[:], (300, 300, 6), rtol=1e-6)  # the scan's 300 mm, 6 mm slices
    assert (tuple(head.position), tuple(head.read_dir), tuple(head.phase_dir)) == (POSITION, READ_DIR, PHASE_DIR)
    assert (head.slice, head.image_type, head.image_index, head.image_series_index) == (0, 1, 1, 1)
    meta = image.meta
    assert "acquired mask" in meta["ImageComments"] and meta["SequenceDescriptionAdditional"] == "KDC"
    assert float(meta["WindowWidth"]) == pytest.approx(float(expected.max()), rel=1e-5)
    assert float(meta["WindowCenter"]) == pytest.approx(float(expected.max()) / 2, rel=1e-5)
    assert len(logs) == 1 and logs[0].endswith("closed after 1 image(s)"), logs


def slice_file(source: Path, number: int, path: Path) -> Path:
    """The acquisitions of slice ``number`` of ``source`` as a file of their own."""
    with h5py.File(source) as file, h5py.File(path, "w") as out:
        rows = file["dataset/data"][()]
        out.create_dataset("dataset/xml", data=file["dataset/xml"][()])
        out.create_dataset("dataset/data", data=rows[rows["head"]["idx"]["slice"] == number],
                           dtype=file["dataset/data"].dtype)
    return path


def test_each_slice_is_sent_when_its_last_acquisition_arrives(tmp_path, square_model):
    # -a 4 writes 4 repetitions, each sampling other lines: made 4 slices, each reconstructed with its own lines
    source = generate(tmp_path / "scan.h5", "-m", str(MATRIX), "-c", "1", "-a", "4", "-w", "8")
    slices_from_repetitions(source)
    with h5py.File(source) as file:
        slices = file["dataset/data"]["head"]["idx"]["slice"]
    first_of_slice_1 = 2 + int(np.argmax(slices == 1))  # after CONFIG_TEXT and the header
    stream = messages(source, config="{}")  # uint16, the default
    with serving(square_model) as (port, logs), socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"".join(stream[:first_of_slice_1]))
        with sock.makefile("rb") as reader:
            answers = ProtocolDeserializer(reader).deserialize()
            first = next(answers)  # slice 0's image, while slices 1 to 3 are still to be sent
            sock.sendall(b"".join(stream[first_of_slice_1:]) + CLOSE)
            images = [first, *answers]
    assert [image.slice for image in images] == [0, 1, 2, 3]
    assert [image.image_index for image in images] == [1, 2, 3, 4]
    for number, image in enumerate(images):
        expected = reconstructed(square_model, slice_file(source, number, tmp_path / f"slice{number}.h5"),
                                 tmp_path / f"out{number}")[0]
        scale = float(image.meta["KdcScale"])
        assert image.data.dtype == np.uint16 and image.data.max() == 4095 and image.meta["WindowWidth"] == "4095"
        assert_close(image.data[0, 0] * scale, expected, slack=0.5 * scale)  # uint16 rounding
    assert logs[-1].endswith("closed after 4 image(s)")


def test_interleaved_slices_are_buffered_apart(tmp_path, square_model):
    """A multi-slice scan acquiring line 1 of every slice, then line 2, ...: each slice is reconstructed when its
    last line arrives, with the same pixels as slice by slice."""
    source = generate(tmp_path / "scan.h5", "-m", str(MATRIX), "-c", "1", "-a", "4", "-w", "8")
    slices_from_repetitions(source)
    with h5py.File(source) as file:
        counters = file["dataset/data"]["head"]["idx"]
        slices = counters["slice"]
    stream = messages(source)
    line_in_slice = np.concatenate([np.arange(np.count_nonzero(slices == n)) for n in np.unique(slices)])
    interleaved = stream[:2] + [stream[2 + i] for i in np.lexsort((slices, line_in_slice))]
    with serving(square_model) as (port, _):
        sequential = exchange(port, b"".join(stream) + CLOSE)
        mixed = exchange(port, b"".join(interleaved) + CLOSE)
    assert sorted(image.slice for image in mixed) == [0, 1, 2, 3]
    for image in mixed:
        np.testing.assert_array_equal(image.data, sequential[image.slice].data)


def strip_slice_flags(path: Path) -> None:
    """Clear ACQ_FIRST_IN_SLICE and ACQ_LAST_IN_SLICE (bits 7, 8) of every acquisition: a stream whose slices
    end by the encoding limits alone."""
    with h5py.File(path, "r+") as file:
        data = file["dataset/data"]
        rows = data[()]
        rows["head"]["flags"] &= ~np.uint64(0b11 << 6)
        data[...] = rows


def multi_slice(path: Path, coils: int, slices: int = 3) -> Path:
    """A fully sampled scan of ``slices`` slices (repetitions made slices), with noise readouts."""
    generate(path, "-m", str(MATRIX), "-c", str(coils), "-r", str(slices), "-w", "8", "-C")
    slices_from_repetitions(path)
    return path


ACC4 = '{"data_type": "float", "acceleration": 4}'


def test_without_slice_flags_a_slice_ends_at_the_last_line_of_the_encoding_limits(tmp_path, square_model):
    flagged = multi_slice(tmp_path / "flagged.h5", 1)
    stripped = multi_slice(tmp_path / "stripped.h5", 1)
    strip_slice_flags(stripped)
    with h5py.File(stripped) as file:
        heads = file["dataset/data"]["head"]
        assert not (heads["flags"] & (0b11 << 6)).any()
        image_rows = (heads["flags"] & (1 << 18)) == 0
        first_of_slice_1 = 2 + int(np.argmax(image_rows & (heads["idx"]["slice"] == 1)))
    stream = messages(stripped, config=ACC4)
    with serving(square_model) as (port, logs):
        expected = exchange(port, b"".join(messages(flagged, config=ACC4)) + CLOSE)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock, sock.makefile("rb") as reader:
            sock.sendall(b"".join(stream[:first_of_slice_1]))  # slice 0, its last line (31) last
            answers = ProtocolDeserializer(reader).deserialize()
            first = next(answers)  # before slice 1 is sent: not held until CLOSE
            sock.sendall(b"".join(stream[first_of_slice_1:]) + CLOSE)
            images = [first, *answers]
    assert [image.slice for image in images] == [0, 1, 2] == [image.slice for image in expected]
    for image, reference in zip(images, expected):
        np.testing.assert_array_equal(image.data, reference.data)
    assert logs[-1].endswith("closed after 3 image(s)")


def test_encoding_limits_of_0_to_0_split_nothing(tmp_path, square_model):
    """Limits that say nothing (line 0 to 0, as a header with unset limits gives) leave a flagless stream's slices to
    CLOSE, instead of ending a slice at every readout of line 0."""
    flagged = multi_slice(tmp_path / "flagged.h5", 1)
    stripped = multi_slice(tmp_path / "stripped.h5", 1)
    strip_slice_flags(stripped)
    edit_header(stripped, "<maximum>31</maximum>", "<maximum>0</maximum>")
    with serving(square_model) as (port, _):
        expected = exchange(port, b"".join(messages(flagged, config=ACC4)) + CLOSE)
        images = exchange(port, b"".join(messages(stripped, config=ACC4)) + CLOSE)
    assert [image.slice for image in images] == [0, 1, 2]
    for image, reference in zip(images, expected):
        np.testing.assert_array_equal(image.data, reference.data)


@pytest.mark.parametrize(("coils", "model_fixture"), [(1, "square_model"), (8, "complex_model_file")])
def test_volume_normalisation_gives_kdc_reconstructs_images_of_a_multi_slice_scan(tmp_path, request, coils,
                                                                                  model_fixture):
    """With "normalise": "volume" the slices are coil-compressed and normalised as one volume, as kdc reconstruct
    does a file; per slice (the default) they are not."""
    model = request.getfixturevalue(model_fixture)
    source = multi_slice(tmp_path / "scan.h5", coils)
    result = kdc_reconstruct(model, source, "--out", tmp_path / "out", "-f", "h5", "--threads", "1", "--acc", "4")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "out" / "scan.h5") as file:
        expected = file["reconstruction"][()]
    volume = '{"data_type": "float", "acceleration": 4, "normalise": "volume"}'
    with serving(model) as (port, _):
        images = exchange(port, b"".join(messages(source, config=volume)) + CLOSE)
        per_slice = exchange(port, b"".join(messages(source, config=ACC4)) + CLOSE)
    assert [image.slice for image in images] == [0, 1, 2] and [image.image_index for image in images] == [1, 2, 3]
    for image in images:
        assert_close(image.data[0, 0], expected[image.slice])
    differences = [np.abs(image.data[0, 0] - expected[image.slice]).max() / expected.max() for image in per_slice]
    assert max(differences) > 1e-6


def test_the_demo_model_answers_with_kdc_reconstructs_image(tmp_path):
    """The issue's check: kdc serve pretrained:demo-4x-kd --protocol mrd, a client of the ismrmrd package, an
    undersampled 128x128 scan: the image kdc reconstruct writes."""
    from kdc.pretrained import resolve

    model = resolve(Path("pretrained:demo-4x-kd"), "onnx")
    source = generate(tmp_path / "scan.h5", "-m", "128", "-c", "1", "-a", "4", "-w", "8", "-C")
    expected = reconstructed(model, source, tmp_path / "out")
    with serving(model) as (port, _):
        (image,) = exchange(port, b"".join(messages(source)) + CLOSE)
    assert_close(image.data[0, 0], expected[0])


def test_four_scanners_at_once_and_a_fifth_is_told_the_server_is_busy(tmp_path, square_model):
    source = scan(tmp_path / "scan.h5", 1)
    waveform = serialised(ismrmrd.Waveform.from_array(np.zeros((2, 10), np.uint32)))  # physiology: skipped
    stream = messages(source)
    payload = b"".join(stream[:2]) + waveform + b"".join(stream[2:])
    with serving(square_model) as (port, logs):
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(4)]
        readers = [sock.makefile("rb") for sock in sockets]
        answers = [ProtocolDeserializer(reader).deserialize() for reader in readers]
        for sock in sockets:
            sock.sendall(payload)
        images = [next(answer) for answer in answers]  # all four connections are being served
        assert exchange(port, b"") == ["error: server busy: 4 connections already served"]
        for sock, answer in zip(sockets, answers):
            sock.sendall(CLOSE)
            assert list(answer) == []  # then CLOSE
        for reader, sock in zip(readers, sockets):
            reader.close()
            sock.close()
    for image in images[1:]:
        np.testing.assert_array_equal(image.data, images[0].data)
    assert sum("refused" in line for line in logs) == 1 and sum("closed after 1" in line for line in logs) == 4


def contradicting(xml: str) -> str:
    return xml.replace("<x>64</x>", "<x>32</x>", 1)  # encodedSpace: the readouts hold 64 samples


BAD_STREAMS = {
    "unknown message id": (lambda s: s[0] + struct.pack("<H", 999), {}, "unknown message id 999"),
    "truncated message": (lambda s: b"".join(s[:3]) + s[3][:100], {},
                          "truncated message: an ACQUISITION header ended after 98 of 340 bytes"),
    "unparsable header": (lambda s: s[0] + struct.pack("<HI", 3, 8) + b"<not xml", {},
                          "the MRD XML header: ISMRMRD XML header is not valid"),
    "acquisition before the header": (lambda s: s[0] + s[2], {},
                                      "an ACQUISITION arrived before the XML header (METADATA_XML_TEXT, id 3)"),
    "disconnect mid-slice": (lambda s: b"".join(s[:6]), {}, "client disconnected mid-slice (4 acquisition(s) of "
                                                            "slice(s) [0] not reconstructed)"),
    "message too long": (lambda s: s[0] + struct.pack("<HI", 5, 1 << 30), {},
                         "TEXT declares 1073741824 bytes, above the server's limit of 1048576 (--max-message-mb)"),
    "too many acquisitions": (lambda s: b"".join(s) + CLOSE, {"max_acquisitions_per_slice": 4},
                              "slice 0 has more than 4 acquisitions (--max-acquisitions-per-slice)"),
    "idle client": (lambda s: b"".join(s[:4]), {"idle_timeout": 0.2}, "idle for 0.2 s (--idle-timeout)"),
    "buffer full": (lambda s: b"".join(s) + CLOSE, {"max_open_slices_bytes": 4 * 64 * 8},  # 4 readouts of 64 samples
                    "the open slices [0] hold more than 2048 bytes of samples (--max-open-slices-mb)"),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_a_bad_stream_gets_one_text_and_the_server_serves_the_next(tmp_path, square_model, case):
    build, limits, message = BAD_STREAMS[case]
    source = scan(tmp_path / "scan.h5", 1)
    stream = messages(source)
    with serving(square_model, max_message_bytes=1 << 20, **limits) as (port, logs):
        answers = exchange(port, build(stream), shutdown=case != "idle client")
        assert len(answers) == 1 and answers[0].startswith("error: ") and message in answers[0], answers
        (line,) = logs
        assert "error:" in line and message.split(":")[0] in line
        if not limits:  # the server's own limits refuse nothing of a good stream
            (image,) = exchange(port, b"".join(stream) + CLOSE)
            assert isinstance(image, ismrmrd.Image)


def test_acquisitions_that_contradict_the_header(tmp_path, square_model):
    source = scan(tmp_path / "scan.h5", 1)
    with h5py.File(source) as file:
        xml = file["dataset/xml"][0].decode()
    with serving(square_model) as (port, logs):
        (answer,) = exchange(port, b"".join(messages(source, xml=contradicting(xml))) + CLOSE)
    assert answer.startswith("error: mrd 127.0.0.1:") and answer.endswith(
        "the acquisitions of slice 0 number_of_samples is [64], expected one value from 1 to the encoded matrix x=32 "
        "(inconsistent matrix sizes)")
    assert len(logs) == 1 and "error:" in logs[0]


def test_a_magnitude_model_refuses_multi_coil_data_as_kdc_reconstruct_does(tmp_path, square_model):
    source = scan(tmp_path / "scan8.h5", 8)
    with serving(square_model) as (port, logs):
        (answer,) = exchange(port, b"".join(messages(source)) + CLOSE)
    assert answer.startswith("error: ") and ("multi-coil k-space (8 coils) needs a complex model (contract "
                                             "output_kind 'complex'); student.onnx reconstructs magnitude") in answer
    assert len(logs) == 1


def kdc_cli(*args):
    from typer.testing import CliRunner

    from kdc.cli import app

    return CliRunner().invoke(app, [*map(str, args)])


def test_mrd_client_writes_the_images_as_ismrmrd_image_groups(tmp_path, square_model):
    source = scan(tmp_path / "scan.h5", 1)
    expected = reconstructed(square_model, source, tmp_path / "out")
    out = tmp_path / "images.h5"
    with serving(square_model) as (port, _):
        result = kdc_cli("mrd-client", source, "--port", port, "--out", out, "--config", FLOAT)
        assert result.exit_code == 0, result.output
        assert f"wrote 1 image(s) to {out}" in result.output
        dataset = ismrmrd.Dataset(str(out), "dataset", create_if_needed=False)
        image = dataset.read_image("image_1", 0)
        dataset.close()
        assert_close(image.data[0, 0], expected[0])
        refused = kdc_cli("mrd-client", scan(tmp_path / "scan8.h5", 8), "--port", port, "--out", tmp_path / "x.h5")
    assert refused.exit_code == 1 and refused.output.startswith(f"error: server 127.0.0.1:{port}: ")
    assert "needs a complex model" in refused.output and not (tmp_path / "x.h5").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


SERVE_MRD = BLOCK_TORCH + """
import typer
from kdc._cli import user_errors
from kdc.runtime.cli import serve
typer.run(user_errors(serve))
"""


def test_kdc_serve_protocol_mrd_without_torch(tmp_path, square_model):
    source = scan(tmp_path / "scan.h5", 1)
    port, log = free_port(), tmp_path / "serve.log"
    command = [sys.executable, "-c", SERVE_MRD, str(square_model), "--protocol", "mrd", "--port", str(port)]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # wait until it listens
            if process.poll() is not None:
                raise AssertionError(log.read_text())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        (image,) = exchange(port, b"".join(messages(source)) + CLOSE)
        assert isinstance(image, ismrmrd.Image)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    text = log.read_text()
    assert f"over MRD at 127.0.0.1:{port}" in text and "closed after 1 image(s)" in text and "stopped" in text


@pytest.mark.parametrize(("options", "message"), [
    (["--protocol", "http"], "--protocol 'http': expected kserve or mrd"),
    (["--protocol", "mrd", "--max-connections", "0"], "--max-acquisitions-per-slice and --max-connections >= 1"),
    (["--protocol", "mrd", "--idle-timeout", "0"], "--max-open-slices-mb and --idle-timeout must be > 0"),
])
def test_serve_mrd_options_are_checked_in_one_line(square_model, options, message):
    result = kdc_cli("serve", square_model, *options)
    assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output, result.output


def test_serve_mrd_serves_one_model(square_model, complex_model_file):  # noqa: F811
    result = kdc_cli("serve", square_model, complex_model_file, "--protocol", "mrd")
    assert result.exit_code == 1 and result.output == "error: --protocol mrd serves one model, got 2\n"
