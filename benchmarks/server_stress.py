"""Evidence for ``kdc serve``'s limits: throughput under load with and without 100 slow clients, and the peak
memory of the largest request the server accepts.

The student ``DCCNN(5, 3, 32)`` (random weights) at 256x256, exported with the default lowering (mask input), is
served by ``kdc serve`` in a subprocess (torch blocked) with its defaults (2 inference workers, 2 threads, 64 MB
bodies, 256 MB body budget, default ``--max-batch``). Four client threads send batch-1 binary requests for a fixed
time, first alone, then while 100 connections send header bytes at 1 byte/s (shorter than the 10 s header
timeout, so they stay open throughout). Liveness is probed while they are open. Then one request of the largest
batch the server accepts; peak (``VmHWM``) and final (``VmRSS``) memory of the server process from /proc.

    .venv/bin/python benchmarks/server_stress.py [--seconds 8] [--out docs/results/server_stress]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: the tests' server harness

from runtime_latency import infer_request  # noqa: E402

from kdc._io import write_results  # noqa: E402
from kdc.export import export_model  # noqa: E402
from kdc.models import build_model, save_checkpoint  # noqa: E402
from kdc.runtime import load  # noqa: E402
from kdc.runtime.server import Limits, default_max_batch, slice_memory  # noqa: E402
from tests.runtime.helpers import Server, process_memory_mb, slow_clients  # noqa: E402

SIZE = (256, 256)
THREADS = 2
CLIENTS = 4
SLOW_CLIENTS = 100
SLOW_HEADERS = b"POST /v2/models/student/infer HTTP/1.1\r\nhost: kdc\r\ncontent-type: application/json\r\n"


def load_phase(server: Server, body: bytes, headers: dict[str, str], seconds: float) -> dict[str, float]:
    """Requests per second and latency percentiles of ``CLIENTS`` threads posting ``body`` for ``seconds``."""
    latencies: list[float] = []
    failures = [0]
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                response = http.post("/v2/models/student/infer", content=body, headers=headers)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failures[0] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda _: client(), range(CLIENTS)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "failures": failures[0], "requests_per_s": len(latencies) / elapsed,
            "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "max_ms": float(ms.max())}


def liveness_ms(server: Server, probes: int = 5) -> float:
    """Slowest of ``probes`` ``/v2/health/live`` answers, in ms."""
    times = []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for _ in range(probes):
            start = time.perf_counter()
            http.get("/v2/health/live").raise_for_status()
            times.append(time.perf_counter() - start)
    return max(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="Length of each load phase (< header timeout).")
    parser.add_argument("--out", type=Path, default=Path("docs/results/server_stress"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="server-stress-"))
    torch.manual_seed(0)
    meta = {"role": "student", "acceleration": 4, "image_size": list(SIZE)}
    save_checkpoint(work / "student.pt", build_model("student"), meta)
    export_model(work / "student.pt", work / "student.onnx")
    model = load(work / "student.onnx", threads=THREADS)
    max_batch = default_max_batch(model, Limits().inference_memory)
    body, headers = infer_request(model.example_feeds(batch=1), binary=True)
    big_body, big_headers = infer_request(model.example_feeds(batch=max_batch), binary=True)

    server = Server([work / "student.onnx"], work / "server.log", "--threads", str(THREADS))
    try:
        server.wait_ready()
        server.client.post("/v2/models/student/infer", content=body, headers=headers).raise_for_status()
        alone = load_phase(server, body, headers, args.seconds)
        alone["liveness_max_ms"] = liveness_ms(server)
        with slow_clients(server.port, SLOW_CLIENTS, SLOW_HEADERS):
            threading.Event().wait(1.0)
            slowed = load_phase(server, body, headers, args.seconds)
            slowed["liveness_max_ms"] = liveness_ms(server)
        before = process_memory_mb(server.process.pid)["VmRSS"]
        response = server.client.post("/v2/models/student/infer", content=big_body, headers=big_headers)
        response.raise_for_status()
        time.sleep(0.5)  # the memory is given back once the answer is sent
        memory = process_memory_mb(server.process.pid)
        over_body, over_headers = infer_request(model.example_feeds(batch=max_batch + 1), binary=True)
        over = server.client.post("/v2/models/student/infer", content=over_body, headers=over_headers)
    finally:
        server.stop()

    report = {
        "settings": {"size": list(SIZE), "threads": THREADS, "workers": 2, "clients": CLIENTS,
                     "slow_clients": SLOW_CLIENTS, "seconds": args.seconds, "limits": vars(Limits())},
        "throughput": {"alone": alone, "with_slow_clients": slowed},
        "largest_request": {"batch": max_batch, "body_mb": len(big_body) / 2**20, "rss_before_mb": before,
                            "peak_mb": memory["VmHWM"], "rss_after_mb": memory["VmRSS"],
                            "estimate_mb": max_batch * slice_memory(model) / 2**20,
                            "batch_plus_one_status": over.status_code},
        "environment": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                        "load_average": list(os.getloadavg()), "python": platform.python_version()},
        "command": "python benchmarks/server_stress.py " + " ".join(sys.argv[1:]),
    }
    write_results(args.out, report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    rows = report["throughput"]
    big = report["largest_request"]
    settings = report["settings"]
    lines = ["# `kdc serve` under stress (`benchmarks/server_stress.py`)", "",
             f"Student DC-CNN at {settings['size'][0]}x{settings['size'][1]}, binary batch-1 requests from "
             f"{settings['clients']} client threads for {settings['seconds']:g} s per row, server defaults "
             f"({settings['workers']} workers x {settings['threads']} threads), client and server on the same "
             "CPUs.", "",
             "| load | requests/s | median ms | p90 ms | max ms | failed | slowest liveness ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, label in (("alone", "clients alone"),
                        ("with_slow_clients", f"+ {settings['slow_clients']} slow clients (headers at 1 byte/s)")):
        r = rows[name]
        lines.append(f"| {label} | {r['requests_per_s']:.2f} | {r['median_ms']:.0f} | {r['p90_ms']:.0f} | "
                     f"{r['max_ms']:.0f} | {r['failures']} | {r['liveness_max_ms']:.1f} |")
    lines += ["", f"Largest request accepted: batch {big['batch']} (the default `--max-batch` at this size), "
              f"{big['body_mb']:.1f} MB binary body. Server RSS {big['rss_before_mb']:.0f} MB before, "
              f"**peak {big['peak_mb']:.0f} MB**, {big['rss_after_mb']:.0f} MB after the answer; the documented "
              f"estimate of its inference memory is {big['estimate_mb']:.0f} MB. Batch {big['batch'] + 1}: "
              f"HTTP {big['batch_plus_one_status']}.", ""]
    env = report["environment"]
    lines += [f"{env['cpu']}, {env['cpu_count']} CPUs, load average {[round(x, 2) for x in env['load_average']]} "
              f"at the end (other engineers share this machine). Re-run: `{report['command']}`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
