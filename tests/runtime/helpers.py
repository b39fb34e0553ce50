"""Shared by the runtime tests: a torch blocker for subprocesses and a real server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

#: Prepended to ``python -c`` code: any ``import torch`` in that process raises ImportError.
BLOCK_TORCH = """
import sys
class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"importing {name} is forbidden in this process")
sys.meta_path.insert(0, _BlockTorch())
"""
SERVE = BLOCK_TORCH + """
import typer
from kdc._cli import user_errors
from kdc.runtime.cli import serve
typer.run(user_errors(serve))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A ``kdc serve`` subprocess (torch blocked) with an httpx client on its base URL."""

    def __init__(self, models: list[Path], log: Path, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-c", SERVE, *map(str, models), "--port", str(self.port), *options]
        self.process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/v2/health/ready").status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code of a graceful shutdown."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@contextlib.contextmanager
def running_server(models: list[Path], log: Path, *options: str) -> Iterator[Server]:
    server = Server(models, log, *options)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def binary_request(feeds: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """An infer body in the binary tensor data extension (a JSON header, then the raw little-endian tensors) asking
    for the ``image`` output in binary, and its headers."""
    head = json.dumps({"inputs": [{"name": name, "shape": list(array.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": array.nbytes}} for name, array in feeds.items()],
                       "outputs": [{"name": "image", "parameters": {"binary_data": True}}]}).encode()
    body = head + b"".join(array.astype("<f4").tobytes() for array in feeds.values())
    return body, {"Inference-Header-Content-Length": str(len(head))}


def binary_image(response: httpx.Response, shape: tuple[int, ...]) -> np.ndarray:
    """The binary ``image`` output of a :func:`binary_request` answer."""
    length = int(response.headers["Inference-Header-Content-Length"])
    return np.frombuffer(response.content[length:], dtype="<f4").reshape(shape)


def process_memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` (now) and ``VmHWM`` (peak) of a process, in MiB, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


@contextlib.contextmanager
def slow_clients(port: int, count: int, request: bytes, interval: float = 1.0) -> Iterator[list[socket.socket]]:
    """``count`` connections to 127.0.0.1:``port`` that each send one byte of ``request`` per ``interval`` seconds
    (a thread drives them) until the block ends or the server closes them; they are closed on exit."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    stop = threading.Event()

    def trickle() -> None:
        for position in range(len(request)):
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.send(request[position:position + 1])
            if stop.wait(interval):
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield sockets
    finally:
        stop.set()
        thread.join()
        for sock in sockets:
            sock.close()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends on ``sock`` until it closes the connection; raises TimeoutError after ``timeout`` s."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def export_complex_model(directory: Path, size: int) -> Path:
    """A tiny random-weight complex DC-CNN exported as ``directory/complex.onnx`` at ``size`` x ``size`` (mask input,
    columns), as a multi-coil scan needs."""
    from kdc.export import export_model
    from kdc.models import save_checkpoint
    from tests.export.helpers import complex_model

    meta = {"role": "student", "acceleration": 4, "image_size": [size, size], "mask_kind": "random",
            "mask_seed": 1, "task": "recon_complex"}
    save_checkpoint(directory / "student.pt", complex_model(), meta)
    export_model(directory / "student.pt", directory / "complex.onnx")
    return directory / "complex.onnx"
