"""Larger-than-memory loading: a generated fastMRI multi-coil dataset on disk, read through ``SliceDataset``.

Writes ``--volumes`` files of ``--slices`` slices each in fastMRI's multi-coil layout (``kspace`` (S, 15, 640, 368)
complex64, centred, contiguous, plus ``reconstruction_rss`` and ``ismrmrd_header``) to a temporary directory
(default: at least 8 GB), opens the split twice (the first open streams every volume once for its statistics, coil
compression matrix and scale; the second reads them from the statistics cache), then
times a shuffled ``DataLoader`` (batch 4, ``kdc distill``'s default; workers as ``kdc distill --workers`` makes
them: one BLAS thread each) with 0 and 2 workers over ``--items`` items per setting and image kind,
sampling the resident memory of the process and its workers together every 50 ms. The dataset is deleted at the end.
The k-space is birdcage-coil, smooth-phase data of a real demo brain slice (resampled to 640x368) plus noise,
so every slice differs.

    .venv/bin/python benchmarks/data_loading.py [--volumes 10] [--slices 30] [--items 200] [--tmp DIR]

Results go to docs/results/data_loading.{json,md}. The files were just written, so the OS page cache may hold
much of them: the throughput is that of a warm cache where memory allows, not of a cold disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
from torch.utils.data import DataLoader

from kdc._io import write_results
from kdc.data.build import FASTMRI_HEADER
from kdc.data.demo import validation_images
from kdc.data.prepare import prepare_dataset
from kdc.data.slices import one_thread_per_worker, open_split
from kdc.mri.fft import fft2c
from kdc.mri.simulate import complex_coil_images

SHAPE, COILS = (640, 368), 15
#: Slices per batch: ``kdc distill``'s default.
BATCH = 4


class PeakMemory:
    """Largest sum of the resident memory of this process and its children, sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_dataset(root: Path, volumes: int, slices: int) -> int:
    """Write the volumes; return the bytes on disk."""
    rng = np.random.default_rng(0)
    base = complex_coil_images(validation_images(SHAPE, 1), COILS, seed=0)[0]  # (C, H, W)
    kspace = fft2c(base).astype(np.complex64)
    (root / "train").mkdir(parents=True)
    for volume in range(volumes):
        path = root / "train" / f"file{volume:04d}.h5"
        with h5py.File(path, "w") as file:
            data = file.create_dataset("kspace", (slices, COILS, *SHAPE), np.complex64)
            for index in range(slices):
                noise = rng.standard_normal((COILS, *SHAPE), np.float32) * 1e-3
                data[index] = kspace * np.float32(1 + 0.01 * index) + noise
            file["reconstruction_rss"] = np.zeros((slices, 320, 320), np.float32)
            file["ismrmrd_header"] = FASTMRI_HEADER.format(height=SHAPE[0], width=SHAPE[1], last_line=SHAPE[1] - 1,
                                                           centre_line=SHAPE[1] // 2)
            file.attrs.update({"acquisition": "CORPD_FBK", "max": 1.0, "norm": 1.0})
    return sum(path.stat().st_size for path in (root / "train").glob("*.h5"))


def drop_page_cache() -> bool:
    """Empty the OS page cache (root on Linux), so that reads come from the disk; False where not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def read_throughput(files: list[Path], block: int = 64 << 20) -> dict:
    """Sequential read speed of ``files`` (plain 64 MB reads, no decoding), after dropping the page cache."""
    drop_page_cache()
    start, total = time.perf_counter(), 0
    for path in files:
        with path.open("rb", buffering=0) as handle:
            while chunk := handle.read(block):
                total += len(chunk)
    seconds = time.perf_counter() - start
    return {"bytes_read": total, "seconds": round(seconds, 1), "mb_per_s": round(total / seconds / 1e6)}


def time_loader(dataset, workers: int, items: int) -> dict:
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        worker_init_fn=one_thread_per_worker)
    with PeakMemory() as memory:
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += len(batch["slice"])
            if count >= items:
                break
        seconds = time.perf_counter() - start
    return {"workers": workers, "items": count, "seconds": round(seconds, 2),
            "slices_per_s": round(count / seconds, 1), "peak_rss_gb": round(memory.peak / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=10)
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--tmp", type=Path, default=None, help="Where to write the dataset (default: the temp dir).")
    parser.add_argument("--out", type=Path, default=Path("docs/results/data_loading"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kdc-data-loading-", dir=args.tmp))
    os.environ["KDC_CACHE_DIR"] = str(root / "cache")  # start cold; the second open reads the statistics cache
    try:
        start = time.perf_counter()
        size = write_dataset(root, args.volumes, args.slices)
        write_seconds = time.perf_counter() - start
        print(f"wrote {size / 1e9:.2f} GB in {write_seconds:.0f} s to {root}")
        disk = {"page_cache_dropped": drop_page_cache(), **read_throughput(sorted((root / "train").glob("*.h5")))}
        print(f"disk: {disk}")
        rows, open_seconds = [], {}
        for image, when in (("complex", "first open (statistics pass)"), ("magnitude", "again (statistics cache)")):
            with PeakMemory() as memory:
                start = time.perf_counter()
                dataset = open_split(root, "train", 4, image=image)
                open_seconds[when] = {"seconds": round(time.perf_counter() - start, 1),
                                      "peak_rss_gb": round(memory.peak / 1e9, 2)}
            print(f"{image}: {when}: {len(dataset)} slices in {open_seconds[when]['seconds']} s")
            for workers in (0, 2):
                drop_page_cache()
                rows.append({"data": f"raw, {COILS} coils", "image": image, **time_loader(dataset, workers, args.items)})
                print(rows[-1])
        start = time.perf_counter()
        prepared = prepare_dataset([root / "train"], root / "prepared", val_volumes=1)
        prepare_seconds = time.perf_counter() - start
        prepared_bytes = sum(path.stat().st_size for path in (root / "prepared").rglob("*.h5"))
        print(f"prepared {prepared['slices']} ({prepared_bytes / 1e9:.2f} GB) in {prepare_seconds:.0f} s")
        for image in ("complex", "magnitude"):
            dataset = open_split(root / "prepared", "train", 4, image=image)
            for workers in (0, 2):
                rows.append({"data": "prepared, 1 virtual coil", "image": image,
                             **time_loader(dataset, workers, args.items)})
                print(rows[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "dataset": {"layout": "fastmri-multicoil", "shape": list(SHAPE), "coils": COILS, "volumes": args.volumes,
                    "slices": args.volumes * args.slices, "bytes": size, "write_seconds": round(write_seconds, 1)},
        "disk": disk, "open": open_seconds, "loader": rows, "batch_size": BATCH, "shuffle": True,
        "prepared": {"seconds": round(prepare_seconds, 1), "bytes": prepared_bytes, "slices": prepared["slices"]},
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
                    "platform": platform.platform(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
    }
    slice_mb = np.dtype(np.complex64).itemsize * COILS * SHAPE[0] * SHAPE[1] / 1e6
    lines = [
        f"# Data loading: {size / 1e9:.2f} GB fastMRI multi-coil layout ({args.volumes * args.slices} slices, "
        f"{SHAPE[0]}x{SHAPE[1]}, {COILS} coils)", "",
        "Written by `benchmarks/data_loading.py`: shuffled DataLoader, batch 4 (`kdc distill`'s default), workers "
        "as `kdc distill --workers N` makes them, 4x mask. Peak RSS is the process and its workers together.", "",
        f"Raw rows read the {COILS}-coil files with the page cache dropped first "
        f"({'done' if disk['page_cache_dropped'] else 'not possible here: partly warm'}), and coil-compress every "
        f"slice; the disk reads {disk['mb_per_s']} MB/s sequentially, so one {slice_mb:.1f} MB slice costs "
        f"{slice_mb / disk['mb_per_s'] * 1000:.0f} ms of disk time. Prepared rows read the split "
        f"`kdc data prepare` wrote once ({prepare_seconds:.0f} s, {prepared_bytes / 1e9:.2f} GB: one virtual coil "
        "per slice, the same items).", "",
        "| data | image | workers | slices/s | peak RSS (GB) |", "|---|---|---|---|---|",
        *(f"| {r['data']} | {r['image']} | {r['workers']} | {r['slices_per_s']} | {r['peak_rss_gb']} |" for r in rows),
        "",
        "Opening the split: "
        + ", ".join(f"{k} {v['seconds']} s (peak RSS {v['peak_rss_gb']} GB)" for k, v in open_seconds.items())
        + f". Machine: {os.cpu_count()} CPUs, load average {result['machine']['load_average_at_end']} at the end.",
    ]
    write_results(args.out, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
