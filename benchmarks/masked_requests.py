"""Evidence for the runtime's input rules as a scanner integrator meets them: ``kdc serve`` given docs/runtime.md's
request (JSON tensors, uncentred k-space and a 4x mask) with k-space that is pre-masked, fully sampled (the mask to
apply), or finite but huge (3e38).

The shipped ``pretrained:demo-4x-kd`` student (no export, no torch) is served on 127.0.0.1 in a subprocess and given
the 40 validation slices of the demo set (Colin27, 128x128, images peak at 1), 4 per request, with fastMRI's random
4x mask (seed 0). PSNR against the fully sampled slices (volume maximum), zero-filled as the floor. Written to
docs/results/masked_requests.{md,json}.

    .venv/bin/python benchmarks/masked_requests.py [--out docs/results/masked_requests]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from kdc._io import write_results
from kdc.data import metrics
from kdc.data.demo import demo_root
from kdc.data.volumes import read_volume
from kdc.mri.fft import fft2, ifft2
from kdc.mri.masks import cartesian_mask
from kdc.pretrained import model_name
from kdc.runtime import kspace_channels, mask_columns

MODEL = "pretrained:demo-4x-kd"
SERVE = ("import typer; from kdc._cli import user_errors; from kdc.runtime.cli import serve; "
         "typer.run(user_errors(serve))")
PER_REQUEST = 4


@contextlib.contextmanager
def served(model: str) -> Iterator[httpx.Client]:
    """``kdc serve model`` on a free port of 127.0.0.1 and a client on it, until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", SERVE, model, "--port", str(port), "--threads", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if client.get("/v2/health/ready").status_code == 200:
                    break
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(30)


def request(client: httpx.Client, name: str, kspace: np.ndarray, mask: np.ndarray) -> httpx.Response:
    """docs/runtime.md's JSON request."""
    body = {"inputs": [{"name": "kspace", "shape": list(kspace.shape), "datatype": "FP32",
                        "data": kspace.ravel().tolist()},
                       {"name": "mask", "shape": list(mask.shape), "datatype": "FP32", "data": mask.ravel().tolist()}]}
    return client.post(f"/v2/models/{name}/infer", json=body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/masked_requests"))
    args = parser.parse_args()
    targets = np.concatenate([read_volume(path).target for path in sorted((demo_root() / "val").glob("*.h5"))])
    height, width = targets.shape[-2:]
    mask = cartesian_mask("random", 4, (height, width), seed=0)
    full = kspace_channels(fft2(targets))
    mask_input = mask_columns(mask, width)
    zero_filled = np.abs(ifft2(fft2(targets) * mask)).astype(np.float32)
    cases = {"pre-masked k-space + mask": full * mask, "fully sampled k-space + mask": full}
    rows: dict[str, dict[str, object]] = {}
    name = model_name(MODEL)
    with served(MODEL) as client:
        for case, kspace in cases.items():
            answers = [request(client, name, kspace[start:start + PER_REQUEST], mask_input)
                       for start in range(0, len(kspace), PER_REQUEST)]
            images = np.concatenate([np.asarray(a.json()["outputs"][0]["data"], np.float32).reshape(-1, height, width)
                                     for a in answers])
            rows[case] = {"status": sorted({a.status_code for a in answers}),
                          "psnr": metrics.psnr(targets, images), "ssim": metrics.ssim(targets, images),
                          "kdc_warnings": sorted({a.json().get("parameters", {}).get("kdc_warnings", "")
                                                  for a in answers})}
        huge = np.full((1, 2, height, width), 3e38, dtype=np.float32) * mask
        answer = request(client, name, huge, mask_input)
        rows["finite k-space of 3e38 + mask"] = {"status": [answer.status_code], "answer": answer.text[:300]}
    report = {"model": MODEL, "slices": len(targets), "size": [height, width], "mask": "random 4x seed 0",
              "zero_filled": {"psnr": metrics.psnr(targets, zero_filled), "ssim": metrics.ssim(targets, zero_filled)},
              "rows": rows}
    lines = [f"# `kdc serve` on docs/runtime.md's request ({MODEL}, {len(targets)} demo validation slices "
             f"{height}x{width}, random 4x mask)", "",
             "Re-run: `.venv/bin/python benchmarks/masked_requests.py`", "",
             "| request | HTTP | PSNR (dB) | SSIM |", "|---|---:|---:|---:|",
             "| zero-filled (no model) | | {psnr:.2f} | {ssim:.4f} |".format(**report["zero_filled"])]
    for case, row in rows.items():
        scores = f"{row['psnr']:.2f} | {row['ssim']:.4f}" if "psnr" in row else " | "
        lines.append(f"| {case} | {', '.join(map(str, row['status']))} | {scores} |")
    lines += ["", f"The 3e38 request's answer: `{json.loads(rows['finite k-space of 3e38 + mask']['answer'])}`"
              if rows["finite k-space of 3e38 + mask"]["status"] != [200] else
              "The 3e38 request was answered 200 (NaN pixels)."]
    write_results(args.out, report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
