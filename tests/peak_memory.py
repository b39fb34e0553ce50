"""Peak memory of the running process, for tests that measure a child process (standard library only)."""

from __future__ import annotations

from pathlib import Path


def peak_mb() -> float:
    """VmHWM in MB: the peak resident size of this process's own memory map. ``ru_maxrss`` is not usable in a child
    started by fork (``preexec_fn`` forces it): Linux carries the parent's peak over through exec."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
