"""``kdc reconstruct MODEL - --format mrd``: MRD v2 streams in and out, checked against ``mrd-python`` as an outside
reference: its ``phantom`` tool writes the stream, its reader and ``export_png_images`` read kdc's output, and ISMRMRD
files of Debian's ismrmrd-tools are turned into v2 streams here with mrd-python's types (not with kdc's code)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from kdc.cli import app
from tests.ismrmrd_files import generate, slices_from_repetitions

from .helpers import BLOCK_TORCH
from .test_reconstruct import kdc_reconstruct
from .test_reconstruct_ismrmrd import (MATRIX, PHASE_DIR, POSITION, READ_DIR, complex_model_file,  # noqa: F401
                                       scan, square_model)

mrd = pytest.importorskip("mrd")
ismrmrd = pytest.importorskip("ismrmrd")
#: ``kdc reconstruct`` in a process where importing torch fails.
RECONSTRUCT = BLOCK_TORCH + """
import typer
from kdc._cli import user_errors
from kdc.runtime.cli import reconstruct
typer.run(user_errors(reconstruct))
"""


def v2_stream(path: Path, trajectory: str | None = None) -> bytes:
    """The MRD v2 stream of an ISMRMRD file, written with mrd-python: its header's first encoding, then every
    acquisition (noise readouts and repetitions included)."""
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    source = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header()).encoding[0]
    header = mrd.Header()
    encoding = mrd.EncodingType(trajectory=getattr(mrd.Trajectory, (trajectory or source.trajectory.value).upper()))
    for name, space in (("encoded_space", source.encodedSpace), ("recon_space", source.reconSpace)):
        matrix, fov = space.matrixSize, space.fieldOfView_mm
        setattr(encoding, name, mrd.EncodingSpaceType(
            matrix_size=mrd.MatrixSizeType(x=matrix.x, y=matrix.y, z=matrix.z),
            field_of_view_mm=mrd.FieldOfViewMm(x=fov.x, y=fov.y, z=fov.z)))
    limits = source.encodingLimits.kspace_encoding_step_1
    encoding.encoding_limits = mrd.EncodingLimitsType(kspace_encoding_step_1=mrd.LimitType(
        minimum=limits.minimum, maximum=limits.maximum, center=limits.center))
    header.encoding.append(encoding)

    def acquisitions():
        for index in range(dataset.number_of_acquisitions()):
            old = dataset.read_acquisition(index)
            head = mrd.AcquisitionHeader(flags=mrd.AcquisitionFlags(old.flags), measurement_uid=old.measurement_uid,
                                         center_sample=old.center_sample, sample_time_us=old.sample_time_us,
                                         channel_order=list(range(old.active_channels)))
            for counter in ("kspace_encode_step_1", "slice", "repetition", "average", "contrast", "phase", "set"):
                setattr(head.idx, counter, getattr(old.idx, counter))
            head.position[:], head.read_dir[:], head.phase_dir[:] = old.position, old.read_dir, old.phase_dir
            yield mrd.StreamItem.Acquisition(mrd.Acquisition(head=head, data=old.data.astype(np.complex64)))

    buffer = io.BytesIO()
    with mrd.BinaryMrdWriter(buffer) as writer:
        writer.write_header(header)
        writer.write_data(acquisitions())
    dataset.close()
    return buffer.getvalue()


def kdc_stream(model: Path, stream: bytes, *options: str):
    """``kdc reconstruct MODEL - --format mrd OPTIONS`` with ``stream`` on stdin (in-process)."""
    return CliRunner().invoke(app, ["reconstruct", str(model), "-", "--format", "mrd", "--threads", "1", *options],
                              input=stream)


def images_of(stream: bytes) -> list:
    """The images of an MRD v2 stream, read with mrd-python."""
    with mrd.BinaryMrdReader(io.BytesIO(stream)) as reader:
        reader.read_header()
        return [item.value for item in reader.read_data()]


@pytest.mark.parametrize(("coils", "model_fixture", "slices"), [(1, "square_model", 1), (8, "complex_model_file", 3)])
def test_a_v2_stream_gives_kdc_reconstructs_images(tmp_path, request, coils, model_fixture, slices):
    model = request.getfixturevalue(model_fixture)
    if slices == 1:  # undersampled (-a 4, repetition 0 read), with noise readouts
        source, options = scan(tmp_path / "scan.h5", coils, "-C"), []
    else:  # fully sampled, made 3 slices, undersampled with --acc 4 on both sides
        source = generate(tmp_path / "scan.h5", "-m", str(MATRIX), "-c", str(coils), "-r", str(slices), "-C")
        slices_from_repetitions(source)
        options = ["--acc", "4"]
    result = kdc_reconstruct(model, source, "--out", tmp_path / "out", "-f", "h5", "--threads", "1", *options)
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "out" / "scan.h5") as file:
        expected = file["reconstruction"][()]
    streamed = kdc_stream(model, v2_stream(source), *options)
    assert streamed.exit_code == 0, streamed.stderr
    assert streamed.stderr.endswith(f"wrote {slices} MRD v2 image(s) to stdout\n")
    images = images_of(streamed.stdout_bytes)
    assert [type(image.data.dtype.type) for image in images] == [type(np.float32)] * slices
    for number, image in enumerate(images):
        assert image.data.shape == (1, 1, MATRIX, MATRIX)
        assert np.abs(image.data[0, 0] - expected[number]).max() <= 1e-6 * np.abs(expected).max()
        head = image.head
        assert (head.slice, head.image_index, head.image_series_index) == (number, number + 1, 1)
        assert head.image_type == mrd.ImageType.MAGNITUDE
        np.testing.assert_allclose(head.field_of_view, (300, 300, 6), rtol=1e-6)
        assert image.meta["SeriesDescription"][0].value == "KDC"
        assert float(image.meta["WindowWidth"][0].value) == pytest.approx(float(image.data.max()), rel=1e-5)
    if slices == 1:
        assert (tuple(head.position), tuple(head.col_dir), tuple(head.line_dir)) == (POSITION, READ_DIR, PHASE_DIR)


def test_mrd_pythons_phantom_pipes_through_kdc_into_its_png_export(tmp_path, complex_model_file):  # noqa: F811
    """phantom | kdc reconstruct - --format mrd | export_png_images: real pipes between three processes (kdc's
    without torch)."""
    tool = [sys.executable, "-m"]
    phantom = subprocess.Popen([*tool, "mrd.tools.phantom", "-m", str(MATRIX), "-c", "8", "-r", "2"],
                               stdout=subprocess.PIPE)
    kdc = subprocess.Popen([sys.executable, "-c", RECONSTRUCT, str(complex_model_file), "-", "--format", "mrd",
                            "--acc", "4", "--threads", "1"], stdin=phantom.stdout, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    phantom.stdout.close()
    export = subprocess.run([*tool, "mrd.tools.export_png_images", "-o", str(tmp_path / "slice_")], stdin=kdc.stdout,
                            capture_output=True)
    kdc.stdout.close()
    log = kdc.stderr.read().decode()
    assert phantom.wait(60) == 0 and kdc.wait(60) == 0, log
    assert export.returncode == 0, export.stderr.decode()
    assert log.endswith("wrote 1 MRD v2 image(s) to stdout\n")  # repetition 0, as kdc reconstruct reads files
    from PIL import Image

    (png,) = tmp_path.glob("slice_*.png")
    assert Image.open(png).size == (MATRIX, MATRIX)


def crafted(stream: bytes) -> dict[str, tuple[bytes, str]]:
    """Bad v2 streams made from a good one, and the error each gets."""
    magic = b"yardl"
    schema_at = len(magic) + 4  # magic, int32 version, then the schema's varint length
    huge = bytes([0x80] * 5 + [0x10])  # varint 2**39
    return {
        "not mrd": (b"RIFF" + bytes(60), "not an MRD v2 stream (it starts with b'RIFF"),
        "empty": (b"", "not an MRD v2 stream (it ends before the magic bytes b'yardl')"),
        "cut": (stream[: len(stream) - 300], "stdin: MRD v2 stream"),  # ends in, or cannot decode, stream item N
        "huge length": (stream[:schema_at] + huge, "declares an item of 549755813888 bytes, above the limit of"),
        "other version": (magic + b"\x09\x00\x00\x00" + stream[schema_at:], "MRD v2 binary format version 9"),
    }


def test_bad_v2_streams_get_one_line_errors_and_nothing_on_stdout(tmp_path, square_model):
    stream = v2_stream(scan(tmp_path / "scan.h5", 1))
    radial = v2_stream(tmp_path / "scan.h5", trajectory="radial")
    with mrd.BinaryMrdReader(io.BytesIO(stream)) as reader:
        header, items = reader.read_header(), list(reader.read_data())
    items[3].value.head.idx.slice = 1 << 20  # an ISMRMRD counter is uint16
    buffer = io.BytesIO()
    with mrd.BinaryMrdWriter(buffer) as writer:
        writer.write_header(header)
        writer.write_data(items)
    cases = {**crafted(stream), "radial": (radial, "stdin: the MRD v2 header encoding trajectory is 'radial', "
                                                   "expected 'cartesian'"),
             "counter out of range": (buffer.getvalue(), "stdin: MRD v2 acquisition 3 has a header field an ISMRMRD "
                                                         "acquisition header cannot hold (")}
    for case, (payload, message) in cases.items():
        result = kdc_stream(square_model, payload)
        assert result.exit_code == 1, (case, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (case, result.stderr)
        assert message in result.stderr, (case, result.stderr)
        assert result.stdout_bytes == b"", case


def test_no_encoding_no_image_acquisitions_and_an_image_in_the_input_are_refused(tmp_path, square_model):
    buffer = io.BytesIO()
    with mrd.BinaryMrdWriter(buffer) as writer:
        writer.write_header(mrd.Header(encoding=[]))
        writer.write_data([])
    result = kdc_stream(square_model, buffer.getvalue())
    assert result.exit_code == 1 and result.stderr == "error: stdin: the MRD v2 header has no encoding\n"
    source = scan(tmp_path / "scan.h5", 1)
    with mrd.BinaryMrdReader(io.BytesIO(v2_stream(source))) as reader:
        header, items = reader.read_header(), list(reader.read_data())
    buffer = io.BytesIO()
    with mrd.BinaryMrdWriter(buffer) as writer:
        writer.write_header(header)
        writer.write_data([])
    result = kdc_stream(square_model, buffer.getvalue())
    assert result.exit_code == 1 and result.stdout_bytes == b"" and result.stderr == (
        "error: stdin: the MRD v2 stream holds no image acquisitions (all noise, navigator or calibration scans, "
        "or none)\n")
    good = images_of(kdc_stream(square_model, v2_stream(source)).stdout_bytes)
    buffer = io.BytesIO()
    with mrd.BinaryMrdWriter(buffer) as writer:
        writer.write_header(header)
        writer.write_data([items[0], mrd.StreamItem.ImageFloat(good[0])])
    result = kdc_stream(square_model, buffer.getvalue())
    assert result.exit_code == 1 and result.stderr == (
        "error: stdin: MRD v2 stream item 1 is ImageFloat: kdc reconstructs acquisitions (and skips waveforms)\n")


@pytest.mark.parametrize(("arguments", "message"), [
    (["-", "--out", "x"], "an MRD v2 stream is reconstructed alone, from stdin to stdout"),
    (["-", "--format", "h5"], "an MRD v2 stream is reconstructed alone"),
    (["scan.h5", "--format", "mrd"], "an MRD v2 stream is reconstructed alone"),
    (["scan.h5"], "missing option --out DIR"),
])
def test_stdin_goes_with_format_mrd_alone(square_model, arguments, message):
    result = CliRunner().invoke(app, ["reconstruct", str(square_model), *arguments])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and message in result.stderr, result.stderr
