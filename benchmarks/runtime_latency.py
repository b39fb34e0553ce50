"""Evidence for ``kdc.runtime``: teacher vs student on onnxruntime, OpenVINO (f32) and PyTorch eager, and
``kdc serve`` throughput at concurrency 4 against the bare session.

Teacher ``DCCNN(5, 5, 32)`` and student ``DCCNN(5, 3, 32)`` with random weights (latency does not depend on them)
at 256x256, 4x random mask, exported by ``export_model`` (default lowering, mask input). Measured with ``kdc
bench``'s code at 2 threads. The compute floor is the student's convolution FLOPs over this CPU's sgemm peak
(torch.mm, 2 threads). The server runs in a subprocess on the same 2 cores as its 4 client threads.

    .venv/bin/python benchmarks/runtime_latency.py [--iterations 50] [--out docs/results/runtime_latency]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

from kdc._io import write_results
from kdc.export import export_model
from kdc.models import build_model, save_checkpoint
from kdc.runtime import load
from kdc.runtime.bench import Settings, render, run_bench

SIZE = (256, 256)
THREADS = 2
SERVE = ("import typer; from kdc._cli import user_errors; from kdc.runtime.cli import serve; "
         "typer.run(user_errors(serve))")


def conv_flops(model: torch.nn.Module, size: tuple[int, int]) -> float:
    """Multiply-adds x 2 of every 3x3 convolution at ``size`` (the DC steps are a few percent on top)."""
    return sum(2 * m.weight.numel() * size[0] * size[1] for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def sgemm_peak(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """Best torch.mm FLOP/s at ``threads``."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def infer_request(feeds: dict[str, np.ndarray], binary: bool) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 request body: JSON tensors, or Triton's binary tensor extension."""
    if not binary:
        inputs = [{"name": k, "shape": list(v.shape), "datatype": "FP32", "data": v.ravel().tolist()}
                  for k, v in feeds.items()]
        return json.dumps({"inputs": inputs}).encode(), {"content-type": "application/json"}
    inputs = [{"name": k, "shape": list(v.shape), "datatype": "FP32", "parameters": {"binary_data_size": v.nbytes}}
              for k, v in feeds.items()]
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    body = head + b"".join(v.astype("<f4").tobytes() for v in feeds.values())
    return body, {"Inference-Header-Content-Length": str(len(head))}


def concurrent_throughput(call, concurrency: int, requests: int) -> float:
    """Images per second with ``concurrency`` threads doing ``requests`` calls in all (after one warm-up each)."""
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: call(), range(concurrency)))
        start = time.perf_counter()
        list(pool.map(lambda _: call(), range(requests)))
        return requests / (time.perf_counter() - start)


def server_throughput(model_path: Path, concurrency: int, requests: int, workers: int) -> dict[str, float]:
    bare = load(model_path, threads=THREADS)
    feeds = bare.example_feeds()
    results = {"bare_sequential": concurrent_throughput(lambda: bare.run(feeds), 1, requests),
               f"bare_concurrency_{concurrency}": concurrent_throughput(lambda: bare.run(feeds), concurrency, requests)}
    port = 8765
    command = [sys.executable, "-c", SERVE, str(model_path), "--port", str(port), "--threads", str(THREADS),
               "--workers", str(workers)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                          limits=httpx.Limits(max_connections=concurrency)) as client:
            for _ in range(600):
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            for binary in (False, True):
                body, headers = infer_request(feeds, binary)
                url = f"/v2/models/{model_path.stem}/infer"

                def call() -> None:
                    client.post(url, content=body, headers=headers).raise_for_status()

                key = f"server_{'binary' if binary else 'json'}_concurrency_{concurrency}"
                results[key] = concurrent_throughput(call, concurrency, requests)
    finally:
        server.terminate()
        server.wait(60)
    return results


def markdown(report: dict) -> str:
    lines = ["# Runtime latency (`benchmarks/runtime_latency.py`)", "",
             f"DC-CNN at {SIZE[0]}x{SIZE[1]}, batch 1, {THREADS} threads, random weights, 4x mask, default export "
             "(masked DC lowering, mask input). Milliseconds; median of "
             f"{report['settings']['iterations']} runs after {report['settings']['warmup']} warm-up runs.", "",
             "| model | runtime | backend | create | first | median | p90 | p99 | min | max | img/s |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in report["results"]:
        lines.append(f"| {Path(m['model']).name} | {m['runtime']} | {m['backend']} | " + " | ".join(
            f"{m[k]:.1f}" for k in ("create_ms", "first_ms", "median_ms", "p90_ms", "p99_ms", "min_ms", "max_ms",
                                    "throughput")) + " |")
    lines += ["", "Student/teacher speed-up (teacher median / student median, same run):", ""]
    lines += [f"- {s['runtime']}: **{s['speedup']:.2f}x** ({s['teacher_ms']:.1f} -> {s['student_ms']:.1f} ms)"
              for s in report["speedups"]]
    floor = report["compute_floor"]
    lines += ["", f"Student compute floor: {floor['student_gflop']:.2f} GFLOP of convolutions / "
              f"{floor['sgemm_gflops']:.0f} GFLOP/s sgemm peak ({THREADS} threads) = **{floor['floor_ms']:.1f} ms**; "
              + ", ".join(f"{k} at {v:.2f}x the floor" for k, v in floor["ratio"].items()) + ".", ""]
    server = report["server"]
    lines += [f"Server throughput (images/s, student, {server['workers']} inference workers, client and server on "
              f"the same {THREADS} cores):", ""]
    lines += [f"- {k}: {v:.1f}" for k, v in server["throughput"].items()]
    env = report["environment"]
    busy = env["load_average"] and env["load_average"][0] > env["cpu_count"]
    note = "above the CPU count: other processes slowed every row alike" if busy else "this benchmark alone"
    lines += ["", f"{env['cpu']} ({env['cpu_count']} CPUs, 1/5/15-min load average {env['load_average']} when "
              f"the table was done: {note}); " + ", ".join(
        f"{k} {v}" for k, v in env["versions"].items() if v), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/results/runtime_latency"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kdc-runtime-bench-") as tmp:
        work = Path(tmp)
        paths = []
        for role in ("teacher", "student"):
            torch.manual_seed(0)
            model = build_model(role)
            save_checkpoint(work / f"{role}.pt", model, {"role": role, "acceleration": 4, "image_size": list(SIZE)})
            export_model(work / f"{role}.pt", work / f"{role}.onnx")
            paths.append(work / f"{role}.onnx")
        student_flops = conv_flops(build_model("student"), SIZE)
        peak = sgemm_peak(THREADS)
        settings = Settings(threads=THREADS, warmup=args.warmup, iterations=args.iterations)
        report = run_bench([*paths, work / "teacher.pt", work / "student.pt"], ["ort", "openvino", "torch"], settings)
        render(report)
        floor_ms = student_flops / peak * 1e3
        report["compute_floor"] = {
            "student_gflop": student_flops / 1e9, "sgemm_gflops": peak / 1e9, "floor_ms": floor_ms,
            "ratio": {m["runtime"]: m["median_ms"] / floor_ms for m in report["results"] if m["role"] == "student"}}
        report["server"] = {"workers": args.workers, "requests": args.requests,
                            "throughput": server_throughput(work / "student.onnx", 4, args.requests, args.workers)}
    print(json.dumps({"compute_floor": report["compute_floor"], "server": report["server"]}, indent=2))
    write_results(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
