"""``kdc bench``: latency of exported models the way onnxruntime_perf_test and OpenVINO benchmark_app report it.

For each model and runtime: session creation, first inference, then after warm-up the median, p90, p99, min and
max latency and the throughput, with the threads, execution provider or precision, input shape and versions
recorded. Given a teacher and a student, the student/teacher speed-up is computed per runtime from the same run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdc.runtime.session import load, validated_engine
from kdc.runtime.tensors import RuntimeModelError

RUNTIMES = ("ort", "openvino", "torch")
#: Runtimes that can read each file type.
SUFFIX_RUNTIMES = {".onnx": ("ort", "openvino"), ".xml": ("openvino",), ".pt": ("torch",), ".ts": ("torch",),
                   ".pt2": ("torch",)}
#: Checkpoints of a run directory, benchmarked with the exported files found beside them.
RUN_CHECKPOINTS = ("teacher.pt", "student.pt", "kd_student.pt")
STUDENT_ROLES = ("student", "kd_student")
PACKAGES = ("kdc", "numpy", "onnxruntime", "openvino", "torch")
#: Module of the ``torch`` runtime (PyTorch eager on a checkpoint): it needs ``kdc[train]`` and is loaded by name,
#: only when asked for, so that this package never imports torch or kdc's models.
EAGER_RUNNER = "kdc.export.eager"
#: CPU flags of bf16 matrix and vector units (Linux ``/proc/cpuinfo``) that OpenVINO uses and onnxruntime does not.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass
class Runner:
    """One model loaded on one runtime, with an input bound: ``call()`` runs one inference."""

    role: str
    backend: str
    threads: int | None
    shape: tuple[int, ...]
    call: Callable[[], Any]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Settings:
    """What every measurement of one ``kdc bench`` run shares."""

    threads: int | None = None
    batch: int = 1
    warmup: int = 10
    iterations: int = 100
    providers: list[str] | None = None
    precision: str | None = None  # None: what the file was validated at on each runtime (kdc.runtime.load)
    device: str = "CPU"
    size: tuple[int, int] | None = None


@dataclass
class Measurement:
    """Timings of one model on one runtime, in milliseconds; throughput in images per second."""

    model: str
    runtime: str
    role: str
    backend: str
    threads: int | None
    batch: int
    shape: list[int]
    create_ms: float
    first_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    throughput: float
    iterations: int
    warnings: list[str]


def open_runner(path: Path, runtime: str, settings: Settings) -> Runner:
    """Load ``path`` on ``runtime`` and bind a random undersampled input of ``settings.batch``."""
    if runtime == "torch":
        open_checkpoint = getattr(importlib.import_module(EAGER_RUNNER), "open_checkpoint")
        return open_checkpoint(path, threads=settings.threads, batch=settings.batch, size=settings.size,
                               device=settings.device)
    asked_bf16_of_ort = runtime == "ort" and settings.precision == "bf16"
    model = load(path, engine=runtime, providers=settings.providers if runtime == "ort" else None,
                 threads=settings.threads, precision=None if asked_bf16_of_ort else settings.precision,
                 device=settings.device)
    feeds = model.example_feeds(settings.batch)
    shape = feeds[model.input_names[0]].shape
    notes = list(model.warnings)
    if runtime == "ort" and (asked_bf16_of_ort or model.contract.validated_precision()[1] == "bf16"):
        notes.append(ort_bf16_note())
    return Runner(model.role, model.backend, model.threads, shape, lambda: model.run(feeds), notes)


def ort_bf16_note() -> str:
    """One line: onnxruntime ran f32 where bf16 was asked or validated, and which runtime runs bf16."""
    units = [flag for flag in BF16_FLAGS if flag in cpu_flags()]
    cannot = f" and cannot use this CPU's {'/'.join(f.upper().replace('_', '-') for f in units)} units" * bool(units)
    return (f"onnxruntime's CPU provider has no bf16 kernels{cannot}: it ran f32; OpenVINO runs bf16 "
            "(--runtime openvino --precision bf16)")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where ``/proc/cpuinfo`` does not list them."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


def measure(path: Path, runtime: str, settings: Settings, step: Callable[[], None] = lambda: None) -> Measurement:
    """Time creation, the first inference, ``warmup`` untimed runs, then ``iterations`` timed runs."""
    start = time.perf_counter()
    runner = open_runner(path, runtime, settings)
    created = time.perf_counter()
    runner.call()
    first = time.perf_counter()
    step()
    for _ in range(settings.warmup):
        runner.call()
        step()
    latencies = np.empty(settings.iterations)
    for i in range(settings.iterations):
        tick = time.perf_counter()
        runner.call()
        latencies[i] = time.perf_counter() - tick
        step()
    ms = latencies * 1e3
    return Measurement(
        model=str(path), runtime=runtime, role=runner.role, backend=runner.backend, threads=runner.threads,
        batch=settings.batch, shape=list(runner.shape), create_ms=(created - start) * 1e3,
        first_ms=(first - created) * 1e3, median_ms=float(np.median(ms)), p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)), min_ms=float(ms.min()), max_ms=float(ms.max()),
        throughput=settings.batch * settings.iterations / float(latencies.sum()), iterations=settings.iterations,
        warnings=runner.warnings,
    )


def plan(models: list[Path], runtimes: list[str] | None) -> list[tuple[Path, str]]:
    """``(model, runtime)`` pairs: each model on every asked runtime that reads its file type (default: the first)."""
    for runtime in runtimes or []:
        if runtime not in RUNTIMES:
            raise RuntimeModelError(f"unknown runtime {runtime!r}: expected one of {list(RUNTIMES)}")
    cases = []
    for given in models:
        for path in model_files(given):
            readers = SUFFIX_RUNTIMES.get(path.suffix)
            if readers is None:
                raise RuntimeModelError(f"{path}: expected an .onnx, OpenVINO .xml, kdc checkpoint .pt, or TorchScript "
                                        ".pt/.ts/.pt2 file")
            chosen = [r for r in runtimes if r in readers] if runtimes else [default_runtime(path, readers)]
            if not chosen and not given.is_dir():
                raise RuntimeModelError(f"{path}: none of the runtimes {runtimes} reads {path.suffix} files "
                                        f"({readers} do)")
            cases += [(path, runtime) for runtime in chosen]
    if not cases:
        raise RuntimeModelError(f"none of the runtimes {runtimes} reads the files in {[str(m) for m in models]}")
    return cases


def default_runtime(path: Path, readers: tuple[str, ...]) -> str:
    """The runtime a file was validated on (OpenVINO for an ONNX file exported with --precision bf16), else the
    first that reads it."""
    validated = validated_engine(path) if path.suffix == ".onnx" else None
    return validated if validated in readers else readers[0]


def model_files(path: Path) -> list[Path]:
    """``path`` itself, or for a run directory its checkpoints and the exported files beside them."""
    if path.is_dir():
        files = [path / name for name in RUN_CHECKPOINTS if (path / name).is_file()]
        files += sorted(p for p in path.iterdir() if p.suffix in SUFFIX_RUNTIMES and p.name not in RUN_CHECKPOINTS)
        if not files:
            raise RuntimeModelError(f"{path}: directory holds no model files ({', '.join(RUN_CHECKPOINTS)}, "
                                    ".onnx, .xml)")
        return files
    if not path.is_file():
        raise RuntimeModelError(f"{path}: model file not found")
    return [path]


def speedups(results: list[Measurement]) -> list[dict[str, Any]]:
    """Student/teacher median speed-up for every runtime (and batch) on which both a teacher and a student ran."""
    rows = []
    for teacher in (m for m in results if m.role == "teacher"):
        for student in (m for m in results if m.role in STUDENT_ROLES):
            if (student.runtime, student.backend, student.batch) == (teacher.runtime, teacher.backend, teacher.batch):
                rows.append({"runtime": teacher.runtime, "backend": teacher.backend, "batch": teacher.batch,
                             "teacher": teacher.model, "student": student.model,
                             "teacher_ms": teacher.median_ms, "student_ms": student.median_ms,
                             "speedup": teacher.median_ms / student.median_ms})
    return rows


def environment() -> dict[str, Any]:
    """Versions of the packages involved (read from metadata, nothing imported) and the machine."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    # Other processes on a shared machine slow every number down; the load average tells how busy it was.
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "load_average": load, "versions": versions}


def run_bench(models: list[Path], runtimes: list[str] | None, settings: Settings) -> dict[str, Any]:
    """Measure every case with a progress bar on stderr; return ``{"environment", "settings", "results",
    "speedups"}``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if settings.batch < 1 or settings.iterations < 1 or settings.warmup < 0:
        raise RuntimeModelError("batch and iterations must be >= 1 and warmup >= 0")
    cases = plan(models, runtimes)
    console = Console(stderr=True)
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for path, runtime in cases:
            task = progress.add_task(f"{path.name} on {runtime}", total=1 + settings.warmup + settings.iterations)
            result = measure(path, runtime, settings, lambda task=task: progress.advance(task))
            for warning in result.warnings:
                console.print(f"warning: {path.name} on {runtime}: {warning}", markup=False, soft_wrap=True)
            results.append(result)
    return {"environment": environment(), "settings": asdict(settings),
            "results": [asdict(m) for m in results], "speedups": speedups(results)}


def render(report: dict[str, Any]) -> None:
    """Print the table, the speed-ups and the versions to stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="kdc bench (latency in ms, throughput in images/s)")
    headers = ("model", "role", "runtime", "backend", "threads", "batch", "create", "first",
               "median", "p90", "p99", "min", "max", "img/s")
    for header in headers:
        table.add_column(header, justify="left" if header in ("model", "role", "runtime", "backend") else "right")
    for m in report["results"]:
        table.add_row(Path(m["model"]).name, m["role"], m["runtime"], m["backend"], str(m["threads"] or "auto"),
                      str(m["batch"]), *(f"{m[key]:.1f}" for key in ("create_ms", "first_ms", "median_ms", "p90_ms",
                                                                      "p99_ms", "min_ms", "max_ms", "throughput")))
    console = Console(width=200)
    console.print(table)
    for row in report["speedups"]:
        console.print(f"speed-up of {Path(row['student']).name} over {Path(row['teacher']).name} on {row['runtime']} "
                      f"({row['backend']}, batch {row['batch']}): {row['speedup']:.2f}x "
                      f"({row['teacher_ms']:.1f} ms -> {row['student_ms']:.1f} ms)",
                      markup=False, highlight=False)
    env = report["environment"]
    installed = ", ".join(f"{name} {version}" for name, version in env["versions"].items() if version)
    console.print(f"{installed}; {env['cpu']} ({env['cpu_count']} CPUs, load average {env['load_average']})",
                  markup=False, highlight=False)
