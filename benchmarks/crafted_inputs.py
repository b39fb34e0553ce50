"""Rerun every crafted file of ``tests/crafted_files.py`` through ``kdc reconstruct`` and ``kdc data prepare``.

Each run is its own process (``python -m kdc ...``) under ``/usr/bin/time``, with a timeout: the exit code, whether
stderr holds a traceback, how many ``error:`` lines it printed, the peak RSS and the wall time. The totals are the
issue's bar: 0 tracebacks, 0 runs above 2 GB of peak RSS for files under 2 MB, 0 runs that exit 0 (a crafted file
accepted). The model is ``pretrained:demo-4x-kd`` exported for the crafted files' size.

    .venv/bin/python benchmarks/crafted_inputs.py [--timeout 90]

Results go to docs/results/crafted_inputs_rerun.{json,md} (docs/results/crafted_inputs.md has the before/after
table of the change that fixed them).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kdc._io import write_results  # noqa: E402
from tests.crafted_files import CRAFTED, HEIGHT, WIDTH, fastmri  # noqa: E402

TIME = re.compile(r"^kdc-time (\d+) KB ([\d.]+) s$", re.M)
#: What /usr/bin/time adds to stderr besides its format line.
TIME_NOTE = re.compile(r"^Command (exited with non-zero status|terminated by signal) .*$", re.M)
#: A crafted file under this size must not cost more than ``BOUND_MB`` of peak memory.
SMALL_FILE, BOUND_MB = 2 * 2**20, 2048


def run(arguments: list[str], timeout: float) -> dict:
    command = ["/usr/bin/time", "-f", "kdc-time %M KB %e s", sys.executable, "-m", "kdc", *arguments]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return {"exit": None, "timed_out": True}
    timing = TIME.search(result.stderr)
    stderr = TIME_NOTE.sub("", TIME.sub("", result.stderr)).strip()
    return {"exit": result.returncode, "timed_out": False, "traceback": "Traceback" in stderr,
            "error_lines": sum(line.startswith("error: ") for line in stderr.splitlines()),
            "other_lines": sum(bool(line) and not line.startswith("error: ") for line in stderr.splitlines()),
            "peak_mb": int(timing[1]) / 1024 if timing else None, "seconds": float(timing[2]) if timing else None,
            "message": stderr.splitlines()[-1][:160] if stderr else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("--results", type=Path, default=REPO / "docs/results/crafted_inputs_rerun")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdc-crafted-") as tmp:
        root = Path(tmp)
        model = root / "m.onnx"
        subprocess.run([sys.executable, "-m", "kdc", "export", "pretrained:demo-4x-kd", "--size", str(HEIGHT),
                        str(WIDTH), "--out", str(model)], check=True, capture_output=True, cwd=REPO)
        valid = fastmri(root / "valid.h5", coils=3)
        for kind, make in CRAFTED.items():
            path = make(root)
            commands = {"reconstruct": ["reconstruct", str(model), str(path), "--out", str(root / "out")]}
            if path.suffix == ".h5":
                commands["prepare"] = ["data", "prepare", str(path), str(valid), "--out", str(root / "out")]
            for name, arguments in commands.items():
                row = {"kind": kind, "command": name, "file_bytes": path.stat().st_size,
                       **run(arguments, args.timeout)}
                rows.append(row)
                print(f"{kind:40s} {name:12s} exit {row['exit']} {row.get('peak_mb') or 0:7.0f} MB "
                      f"{row.get('message', '')[:70]}", flush=True)
    small = [r for r in rows if r["file_bytes"] < SMALL_FILE]
    totals = {"runs": len(rows), "tracebacks": sum(bool(r.get("traceback")) for r in rows),
              "accepted": sum(r["exit"] == 0 for r in rows), "timed_out": sum(r["timed_out"] for r in rows),
              "not_one_error_line": sum(r["exit"] not in (0, None) and r["error_lines"] != 1 for r in rows),
              f"small_files_above_{BOUND_MB}_mb": sum((r.get("peak_mb") or 0) > BOUND_MB for r in small),
              "largest_peak_mb": max((r.get("peak_mb") or 0) for r in rows)}
    lines = ["# Crafted inputs, rerun (benchmarks/crafted_inputs.py)", "",
             "Every kind of tests/crafted_files.py through `kdc reconstruct` and `kdc data prepare`, one process each.",
             "", "| total | count |", "|---|---:|", *[f"| {k} | {v:.0f} |" for k, v in totals.items()], "",
             "| file | command | exit | error lines | peak MB | s | message |", "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['command']} | {r['exit']} | {r.get('error_lines', '')} | "
                     f"{r.get('peak_mb') or 0:.0f} | {r.get('seconds') or 0:.1f} | "
                     f"{r.get('message', '').replace('|', '/')[:100]} |")
    write_results(args.results, {"totals": totals, "runs": rows}, "\n".join(lines) + "\n")
    print(totals)


if __name__ == "__main__":
    main()
