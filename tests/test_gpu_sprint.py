"""benchmarks/gpu_sprint.sh at toy scale on the CPU: the pipeline the GPU sprint runs, two cells at once."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import make_phantom

REPO = Path(__file__).resolve().parents[1]


def test_toy_sprint_trains_every_cell_and_returns_results_and_checkpoints(tmp_path, write_kdmri):
    data = tmp_path / "data"
    for split, name, seed in (("train", "a", 0), ("train", "b", 1), ("val", "c", 2)):
        write_kdmri(data / split / f"{name}.h5", make_phantom(3, 16, 16, seed=seed))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "DATA": str(data), "RUNS": str(tmp_path / "runs"), "PRECISION": "bf16",
           "PYTHON": os.environ.get("PYTHON", str(Path(os.sys.executable)))}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_sprint.sh"), "toy"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    entry = json.loads((out / "quality.json").read_text())["cpu"]
    seeds = entry["factors"]["4"]["seeds"]
    assert sorted(seeds) == ["0", "1"] and entry["config"]["precision"] == "bf16"
    with tarfile.open(out / "runs.tar.gz") as archive:
        names = set(archive.getnames())
    for seed in (0, 1):
        assert {f"./4x/seed{seed}/{role}.pt" for role in ("teacher", "student", "kd_student")} <= names
        history = (tmp_path / "runs" / "4x" / f"seed{seed}" / "history.jsonl").read_text().splitlines()
        assert {json.loads(line)["precision"] for line in history} == {"bf16"}
    assert not any("/cache/" in name or "/state/" in name for name in names)
    assert "sprint: " in (out / "sprint.log").read_text()
