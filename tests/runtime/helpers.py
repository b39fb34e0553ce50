"""Shared by the runtime tests: a torch blocker for subprocesses and a real server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

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
