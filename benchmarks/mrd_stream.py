"""Latency of ``kdc serve --protocol mrd``: from the last acquisition of a slice on the wire to its image received,
against the model's inference of that same slice, timed inside the server.

    python benchmarks/mrd_stream.py [--model pretrained:demo-4x-kd] [--matrix 128] [--coils 1] [--scans 10]
        [--threads 1] [--out docs/results/mrd_stream]

The server is a subprocess running kdc's MRD server (:func:`kdc.runtime.mrd.run_mrd_server`, what ``kdc serve
--protocol mrd`` runs) whose model's ``reconstruct`` is wrapped to print its duration, so that each slice's wire
time is paired with its own inference (one process, one load, one moment); the client is built on the ``ismrmrd``
package's serialisation; the scan is written by ``ismrmrd_generate_cartesian_shepp_logan`` (-a 4: 4 repetitions,
made 4 slices, each reconstructed when its ``ACQ_LAST_IN_SLICE`` acquisition arrives).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Seconds between a slice's other acquisitions and its last one.
PAUSE = 0.2
#: The server: kdc's MRD server, its model's inference timed (one "model SECONDS" line on stderr per call).
SERVER = """
import sys, time
from pathlib import Path
import kdc.runtime as rt
from kdc.runtime.mrd import MrdLimits, run_mrd_server
model = rt.load(Path(sys.argv[1]), threads=int(sys.argv[3]))
reconstruct = model.reconstruct
def timed(*args, **kwargs):
    started = time.perf_counter()
    result = reconstruct(*args, **kwargs)
    print(f"model {time.perf_counter() - started:.6f}", file=sys.stderr, flush=True)
    return result
model.reconstruct = timed
run_mrd_server(model, "127.0.0.1", int(sys.argv[2]), MrdLimits(), log=lambda line: None)
"""
sys.path.insert(0, str(ROOT))

from kdc._io import write_results  # noqa: E402
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
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "scan.h5"
        subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-m", str(args.matrix), "-c", str(args.coils),
                        "-a", "4", "-w", "8", "-o", str(source)], check=True, capture_output=True)
        slices_from_repetitions(source)
        messages, last = stream_of(source)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = Path(directory) / "server.log"
        with log.open("w") as errors:
            server = subprocess.Popen([sys.executable, "-c", SERVER, str(model_path), str(port), str(args.threads)],
                                      stderr=errors, env={**os.environ, "PYTHONPATH": str(ROOT)})
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
        models = [float(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("model ")]
    models = models[len(last):]  # after the warm-up scan's
    if len(models) != len(latencies):
        raise SystemExit(f"{len(models)} model timings for {len(latencies)} slices: {log.read_text()[-2000:]}")
    extra = [wire - model for wire, model in zip(latencies, models)]
    load_after = os.getloadavg()
    median = {name: statistics.median(values) * 1e3 for name, values in
              (("wire", latencies), ("model", models), ("wire_minus_model", extra))}
    p90 = {name: float(np.percentile(values, 90) * 1e3) for name, values in
           (("wire", latencies), ("wire_minus_model", extra))}
    report = {"model": args.model, "matrix": args.matrix, "coils": args.coils, "slices": len(latencies),
              "threads": args.threads, "median_ms": median, "p90_ms": p90,
              "load_average": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"}
    write_results(args.out, report,
        "# MRD stream latency\n\nProduced by `benchmarks/mrd_stream.py` "
        f"(`--model {args.model} --matrix {args.matrix} --coils {args.coils} --scans {args.scans} "
        f"--threads {args.threads}`), {report['machine']}, 1-minute load average {load_before[0]:.2f} before and "
        f"{load_after[0]:.2f} after.\n\n"
        "| per slice | median ms | p90 ms |\n| --- | --- | --- |\n"
        f"| last acquisition sent -> image received ({len(latencies)} slices) | {median['wire']:.1f} | "
        f"{p90['wire']:.1f} |\n"
        f"| the model's inference of that slice, in the server | {median['model']:.1f} | |\n"
        f"| wire - model, slice by slice | {median['wire_minus_model']:.1f} | {p90['wire_minus_model']:.1f} |\n\n"
        "Wire - model is everything but the inference: reading the last acquisition, placing the slice's readouts, "
        "removing the oversampling, normalising, building and serialising the MRD image, the loopback TCP and the "
        "client's parsing. Each slice's inference is timed in the server and paired with that slice's wire time, "
        "so the two see the same load. The client waits 0.2 s before each slice's last acquisition so that the "
        "server has read the others (as during a scan).\n")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
