"""What kdc's commands delete, leave behind and write invalidly, counted on real runs of the CLI (issue 19, section 5).

* lost inputs: ``--overwrite`` with ``--out`` the directory of the inputs (``reconstruct``, ``data prepare``,
  ``data build``) or a file the user made; every file there before the command is counted if it is gone or
  changed after.
* leftovers after kill -9: ``reconstruct``, ``data prepare`` (twice) and ``export`` killed with SIGKILL as soon as
  their temporary appears, then one successful run of each to another output in the same directory; every hidden
  name left (but the ``.kdc-output`` markers) is counted.
* dciodvfy errors: ``reconstruct -f dicom`` (then ``-f nifti,h5``) of fastMRI files named with a backslash, a
  newline, a control character, Japanese, bytes that are not UTF-8 and 250 characters, and of files whose header's
  field of view gives pixel sizes [0, 0], [inf, nan] and [-7.8e297, -2.34]; the "Error" lines of ``dciodvfy`` over
  every DICOM file written, the PatientID written and the tracebacks.

A kill lands inside a write only when the write lasts long enough to be seen: ``export`` writes its 0.5 MB model in
milliseconds, so its kill often comes too late (exit 0 or nothing left); tests/test_io.py kills a writer inside
the write for certain. Writes ``docs/results/output_safety.{md,json}``. Needs ``dciodvfy`` (dicom3tools) and
``ismrmrd-tools``; 3 to 6 minutes on a busy 2-core machine.

    python benchmarks/output_safety.py [--model m.onnx]   # default: exports pretrained:demo-4x-kd first
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

from kdc._io import OUTPUT_MARKER, atomic_path, write_json
from kdc.data.build import FASTMRI_HEADER
from kdc.data.demo import validation_images
from kdc.mri.fft import fft2c

SIZE = (128, 128)
KDC = [sys.executable, "-m", "kdc"]
NAMES = {"backslash": "back\\slash", "newline": "new\nline", "control": "bell\x07", "japanese": "患者名",
         "not UTF-8": os.fsdecode(b"scan\xff"), "250 characters": "n" * 250}
FIELDS_OF_VIEW = {"FOV 0": ("0", "0"), "FOV inf/nan": ("inf", "nan"), "FOV -1e300": ("-1e300", "-300")}


#: The environment of the CLI's processes (``--pythonpath`` puts another source tree of kdc first).
ENV = dict(os.environ)


def kdc(*args: object, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([*KDC, *map(str, args)], capture_output=True, text=True, errors="replace", timeout=600,
                            env=ENV, cwd=tempfile.gettempdir())  # not this checkout: python -m puts the cwd first
    if check and result.returncode != 0:
        raise RuntimeError(f"kdc {' '.join(map(str, args))}: {result.stderr}")
    return result


def scan(path: Path, slices: int = 3, header: str | None = None) -> Path:
    """A fully sampled fastMRI single-coil file of kdc's validation images."""
    with h5py.File(path, "w") as file:
        file["kspace"] = fft2c(np.tile(validation_images(SIZE, 3), (slices // 3, 1, 1))).astype(np.complex64)
        if header is not None:
            file["ismrmrd_header"] = header
    return path


def ismrmrd_raw(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name in ("s1", "s2"):
        subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(directory / f"{name}.h5")], check=True,
                       capture_output=True)
    return directory


def listing(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` with its content (None for a directory)."""
    return {str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes() for p in directory.rglob("*")}


def lost_inputs(work: Path, model: Path) -> dict[str, dict]:
    """Each --overwrite case: files before, files lost, the command's last line."""
    import nibabel as nib

    work.mkdir()
    scans, other = work / "scans", work / "other"
    for directory in (scans, other):
        directory.mkdir()
        scan(directory / "a.h5")
        shutil.copy(model, directory / "m.onnx")
        (directory / "notes.txt").write_text("mine")
    raw = ismrmrd_raw(work / "raw")
    volumes = work / "volumes"
    volumes.mkdir()
    for name in ("v1", "v2"):
        nib.save(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 8), dtype=np.float32), np.eye(4)),
                 volumes / f"{name}.nii.gz")
    cases = {
        "reconstruct scans/a.h5 --out scans --overwrite": (scans, ["reconstruct", scans / "m.onnx", scans / "a.h5",
                                                                   "--out", scans, "--acc", "4", "--overwrite"]),
        "reconstruct --out other/notes.txt --overwrite": (other, ["reconstruct", other / "m.onnx", other / "a.h5",
                                                                  "--out", other / "notes.txt", "--acc", "4",
                                                                  "--overwrite"]),
        "data prepare raw --out raw --overwrite": (raw, ["data", "prepare", raw, "--out", raw, "--overwrite"]),
        "data build --volume volumes/v*.nii.gz --out volumes --overwrite": (
            volumes, ["data", "build", "--volume", volumes / "v1.nii.gz", "--volume", volumes / "v2.nii.gz",
                      "--size", "32", "--out", volumes, "--overwrite"]),
    }
    results = {}
    for name, (directory, args) in cases.items():
        before = listing(directory)
        result = kdc(*args)
        after = listing(directory) if directory.exists() else {}
        lost = [path for path, content in before.items() if path not in after or after[path] != content]
        results[name] = {"files": len(before), "lost": len(lost), "exit": result.returncode,
                         "said": (result.stderr.strip().splitlines() or [""])[-1].replace(f"{work}/", "")}
    return results


def killed(directory: Path, prefix: str, *args: object, tries: int = 5) -> dict:
    """Run ``kdc ARGS``, SIGKILL it as soon as a name starting with ``prefix`` appears in ``directory``; again (up
    to ``tries`` times) when it finished before that was seen. Returns the last exit code and the names starting
    with ``prefix`` right after (a kill that lands after the rename leaves none)."""
    for _ in range(tries):
        process = subprocess.Popen([*KDC, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=ENV, cwd=tempfile.gettempdir())
        while process.poll() is None:
            if any(entry.name.startswith(prefix) for entry in os.scandir(directory)):
                process.send_signal(signal.SIGKILL)
                break
        if process.wait() == -signal.SIGKILL:
            break
    return {"exit": process.returncode, "left": sorted(p.name for p in directory.glob(f"{prefix}*"))}


def leftovers_after_kill(work: Path, model: Path) -> dict:
    work.mkdir()
    big = scan(work / "big.h5", slices=300)
    raw = ismrmrd_raw(work / "raw")
    kills = {
        "reconstruct": killed(work, ".out1", "reconstruct", model, big, "--out", work / "out1", "--acc", "4",
                              "-f", "nifti,dicom"),
        "data prepare A": killed(work, ".prepA", "data", "prepare", raw, "--out", work / "prepA"),
        "data prepare B": killed(work, ".prepB", "data", "prepare", raw, "--out", work / "prepB"),
        "export": killed(work, ".student.onnx", "export", "pretrained:demo-4x-kd", "--out", work / "student.onnx"),
    }
    kdc("reconstruct", model, big, "--out", work / "out2", "--acc", "4", check=True)
    kdc("data", "prepare", raw, "--out", work / "prep2", check=True)
    kdc("export", "pretrained:demo-4x-kd", "--out", work / "student.onnx", check=True)
    left = sorted(str(p.relative_to(work)) for p in work.rglob(".*") if p.name != OUTPUT_MARKER)
    return {"kills": kills, "left_after_later_runs": left}


def dicom_validity(work: Path, model: Path) -> dict[str, dict]:
    import pydicom

    work.mkdir()
    inputs = {case: scan(work / f"{name}.h5") for case, name in NAMES.items()}
    template = FASTMRI_HEADER.format(height=SIZE[0], width=SIZE[1], last_line=SIZE[1] - 1, centre_line=SIZE[1] // 2)
    for case, (x, y) in FIELDS_OF_VIEW.items():
        header = template.replace(f"<fieldOfView_mm><x>{SIZE[0]}</x><y>{SIZE[1]}</y>",
                                  f"<fieldOfView_mm><x>{x}</x><y>{y}</y>", 1)
        inputs[case] = scan(work / f"{case.replace(' ', '_').replace('/', '_')}.h5", header=header)
    results = {}
    for case, path in inputs.items():
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        result = kdc("reconstruct", model, path, "--out", out, "--acc", "4", "-f", "dicom")
        dicoms = sorted(out.glob("*/IM_*.dcm")) if out.exists() else []
        errors = 0
        for dicom in dicoms:
            report = subprocess.run(["dciodvfy", str(dicom)], capture_output=True, text=True, errors="replace")
            errors += sum("Error" in line for line in (report.stdout + report.stderr).splitlines())
        patient_id = str(pydicom.dcmread(dicoms[0]).PatientID) if dicoms else ""
        shutil.rmtree(out, ignore_errors=True)
        others = kdc("reconstruct", model, path, "--out", out, "--acc", "4", "-f", "nifti,h5")
        results[case] = {"dicom_exit": result.returncode, "dicom_files": len(dicoms), "dciodvfy_errors": errors,
                         "patient_id": patient_id,
                         "nifti_h5_exit": others.returncode,
                         "tracebacks": sum("Traceback" in run.stderr for run in (result, others)),
                         "said": "; ".join(dict.fromkeys(
                             (run.stderr.strip().splitlines() or [""])[-1].replace(f"{work}/", "")
                             for run in (result, others) if run.returncode))}
    return results


def render(results: dict) -> str:
    lost, kills, dicom = results["lost_inputs"], results["kill_9"], results["dicom"]
    lines = ["# Nothing deleted, nothing left behind, nothing invalid written", "",
             f"Written by `{results['command']}` on {results['machine']} (kdc's CLI in subprocesses).", "",
             "## --overwrite onto inputs", "", "| command | files there | lost | exit | said |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| `{name}` | {row['files']} | {row['lost']} | {row['exit']} | {row['said']} |"
              for name, row in lost.items()]
    lines += ["", f"Lost inputs: **{sum(row['lost'] for row in lost.values())}**.", "", "## kill -9 mid-write", "",
              "Killed (exit code), and what each left right after its kill: "
              + "; ".join(f"{name} ({row['exit']}): {', '.join(f'`{n}`' for n in row['left']) or 'nothing'}"
                          for name, row in kills["kills"].items()) + ".",
              "Then one successful `reconstruct`, `data prepare` and `export` to other outputs in the same directory: "
              f"**{len(kills['left_after_later_runs'])}** left"
              + (f" ({', '.join(kills['left_after_later_runs'])})." if kills["left_after_later_runs"] else "."),
              "", "## DICOM validity (`reconstruct -f dicom`, then `-f nifti,h5`)", "",
              "| input | `-f dicom` exit | DICOM files | dciodvfy errors | PatientID | `-f nifti,h5` exit | "
              "tracebacks | errors said |", "|---|---:|---:|---:|---|---:|---:|---|"]
    lines += [f"| {case} | {row['dicom_exit']} | {row['dicom_files']} | {row['dciodvfy_errors']} | "
              f"`{row['patient_id'][:20]!r}` | {row['nifti_h5_exit']} | {row['tracebacks']} | "
              f"{row['said'][:150]} |" for case, row in dicom.items()]
    lines += ["", f"dciodvfy errors: **{sum(row['dciodvfy_errors'] for row in dicom.values())}**; tracebacks: "
                  f"**{sum(row['tracebacks'] for row in dicom.values())}**."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an exported .onnx for 128x128 (default: pretrained:demo-4x-kd)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/output_safety.json"))
    parser.add_argument("--pythonpath", type=Path, help="run the CLI from this kdc source tree (another version)")
    args = parser.parse_args()
    if args.pythonpath:
        ENV["PYTHONPATH"] = os.pathsep.join([str(args.pythonpath.resolve()), ENV.get("PYTHONPATH", "")])
    for tool in ("dciodvfy", "ismrmrd_generate_cartesian_shepp_logan"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: make deps installs dicom3tools and ismrmrd-tools")
    with tempfile.TemporaryDirectory(prefix="kdc-output-safety-") as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            model = work / "m.onnx"
            kdc("export", "pretrained:demo-4x-kd", "--out", model, check=True)
        machine = f"{platform.node()} ({os.cpu_count()} CPUs)"
        results = {"command": shlex.join(["python", *sys.argv]), "machine": machine,
                   "lost_inputs": lost_inputs(work / "lost", model),
                   "kill_9": leftovers_after_kill(work / "kill", model),
                   "dicom": dicom_validity(work / "dicom", model)}
    write_json(args.out, results)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
