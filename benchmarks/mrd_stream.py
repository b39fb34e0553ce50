"""Latency of ``kdc serve --protocol mrd``: from the last acquisition of a slice on the wire to its image received,
against the time of the slice's reconstruction in-process (``reconstruct_volume``: coil compression, normalisation,
model) and of the model's inference alone.

    python benchmarks/mrd_stream.py [--model pretrained:demo-4x-kd] [--matrix 128] [--coils 1] [--scans 10]
        [--threads 1] [--out docs/results/mrd_stream]

The server is a ``kdc serve --protocol mrd`` subprocess; the client is built on the ``ismrmrd`` package's
serialisation; the scan is written by ``ismrmrd_generate_cartesian_shepp_logan`` (-a 4: 4 repetitions, made 4
slices, each reconstructed when its ``ACQ_LAST_IN_SLICE`` acquisition arrives).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Seconds between a slice's other acquisitions and its last one.
PAUSE = 0.2
sys.path.insert(0, str(ROOT))

from tests.ismrmrd_files import slices_from_repetitions  # noqa: E402


def serialised(message) -> bytes:
    from ismrmrd.serialization import ProtocolSerializer

    buffer = io.BytesIO()
    ProtocolSerializer(buffer).serialize(message)
    return buffer.getvalue()


def stream_of(path: Path) -> tuple[list[bytes], list[int]]:
    """The MRD messages of ``path`` (config, header, acquisitions) and the index of each slice's last message."""
    import ismrmrd
    from ismrmrd.serialization import ConfigText

    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    messages = [serialised(ConfigText('{"data_type": "float"}')),
                serialised(ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header()))]
    last = []
    for index in range(dataset.number_of_acquisitions()):
        acquisition = dataset.read_acquisition(index)
        messages.append(serialised(acquisition))
        if acquisition.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) and acquisition.idx.repetition == 0:
            last.append(len(messages) - 1)
    dataset.close()
    return messages, last


def wire_latencies(port: int, messages: list[bytes], last: list[int]) -> list[float]:
    """Seconds from sending each slice's last acquisition to receiving its image, one scan."""
    from ismrmrd.serialization import ProtocolDeserializer

    latencies, start = [], 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock, sock.makefile("rb") as reader:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answers = ProtocolDeserializer(reader).deserialize()
        for stop in last:
            sock.sendall(b"".join(messages[start:stop]))
            time.sleep(PAUSE)  # the server reads the slice's other acquisitions, as they come during a scan
            sock.sendall(messages[stop])
            sent = time.perf_counter()
            next(answers)
            latencies.append(time.perf_counter() - sent)
            start = stop + 1
        sock.sendall(b"".join(messages[start:]) + b"\x04\x00")
        list(answers)
    return latencies


def in_process(model_path: Path, source: Path, threads: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of ``reconstruct_volume`` on slice 0 alone, and of its model inference, ``repeats`` times."""
    import kdc.runtime as rt
    from kdc.runtime.readers import read_input
    from kdc.runtime.reconstruct import Settings, reconstruct_volume

    with h5py.File(source) as file, h5py.File(source.with_name("slice0.h5"), "w") as out:
        rows = file["dataset/data"][()]
        out.create_dataset("dataset/xml", data=file["dataset/xml"][()])
        out.create_dataset("dataset/data", data=rows[rows["head"]["idx"]["slice"] == 0],
                           dtype=file["dataset/data"].dtype)
    model = rt.load(model_path, threads=threads)
    (volume,) = read_input(source.with_name("slice0.h5"))
    reconstruct_volume(volume, model, Settings())  # first run: session warm-up
    pipeline, inference = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = reconstruct_volume(volume, model, Settings())
        pipeline.append(time.perf_counter() - started)
        inference.append(result.seconds)
    return pipeline, inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pretrained:demo-4x-kd")
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--coils", type=int, default=1)
    parser.add_argument("--scans", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/mrd_stream")
    args = parser.parse_args()
    from kdc.pretrained import resolve

    model_path = resolve(Path(args.model), "onnx")
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "scan.h5"
        subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-m", str(args.matrix), "-c", str(args.coils),
                        "-a", "4", "-w", "8", "-o", str(source)], check=True, capture_output=True)
        slices_from_repetitions(source)
        messages, last = stream_of(source)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "kdc", "serve", str(model_path), "--protocol", "mrd",
                                   "--port", str(port), "--threads", str(args.threads)],
                                  stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            wire_latencies(port, messages, last)  # warm-up scan
            latencies = [value for _ in range(args.scans) for value in wire_latencies(port, messages, last)]
        finally:
            server.terminate()
            server.wait(30)
        pipeline, inference = in_process(model_path, source, args.threads, len(latencies))
    median = {name: statistics.median(values) * 1e3 for name, values in
              (("wire", latencies), ("pipeline", pipeline), ("inference", inference))}
    p90 = float(np.percentile(latencies, 90) * 1e3)
    report = {"model": args.model, "matrix": args.matrix, "coils": args.coils, "slices": len(latencies),
              "threads": args.threads, "median_ms": median, "wire_p90_ms": p90,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load "
                         f"average {os.getloadavg()[0]:.1f} at the end"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(
        "# MRD stream latency\n\nProduced by `benchmarks/mrd_stream.py` "
        f"(`--model {args.model} --matrix {args.matrix} --coils {args.coils} --scans {args.scans} "
        f"--threads {args.threads}`), {report['machine']}.\n\n"
        "| | median ms |\n| --- | --- |\n"
        f"| last acquisition sent -> image received ({len(latencies)} slices; p90 {p90:.1f}) | {median['wire']:.1f} |\n"
        f"| slice reconstruction in-process (`reconstruct_volume`) | {median['pipeline']:.1f} |\n"
        f"| model inference alone | {median['inference']:.1f} |\n"
        f"| wire - inference | {median['wire'] - median['inference']:.1f} |\n\n"
        "The wire time includes reading the last acquisition, placing the slice's readouts, coil compression, "
        "normalisation, the model and sending the image; the client waits 0.2 s before each slice's last "
        "acquisition so that the server has read the others (as during a scan). On a machine shared with other "
        "jobs the medians move by several ms between runs.\n")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
