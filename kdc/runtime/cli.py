"""``kdc bench``, ``kdc serve``, ``kdc triton-repo`` and ``kdc reconstruct``: typer commands, heavy imports inside each.

Register them wrapped in :func:`kdc._cli.user_errors`, which turns :class:`kdc.runtime.RuntimeModelError` (a
``KdcError``) and a missing extra into one-line errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kdc.pretrained import model_name, resolve
from kdc.runtime.tensors import RuntimeModelError

ModelsArg = Annotated[list[Path], typer.Argument(help="Exported .onnx / OpenVINO .xml files (or .pt checkpoints "
                                                       "for --runtime torch), or shipped pretrained:<run>-<role> "
                                                       "(their .onnx; their .pt with --runtime torch).",
                                          show_default=False)]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", "-t", help="Intra-op threads (default: the runtime's).")]
ProviderOpt = Annotated[list[str] | None, typer.Option(
    "--provider", "-p", help="onnxruntime execution provider, in priority order: cpu, cuda, tensorrt, openvino or "
                             "a full name (repeat for several).")]
PrecisionOpt = Annotated[str | None, typer.Option(
    help="f32, or f16/bf16 where the runtime can (OpenVINO, TensorRT).  [default: what kdc export validated the file "
         "at on that runtime (--precision bf16: OpenVINO at bf16), else f32]", show_default=False)]
EngineOpt = Annotated[str | None, typer.Option(
    help="ort or openvino (default: the one kdc export validated the file on, else by file type).")]
HTTP_PORT, MRD_PORT = 8000, 9002  # kdc serve's default port, and MRD's by convention
#: The input that means stdin.
STDIO = Path("-")
DeviceOpt = Annotated[str, typer.Option(help="OpenVINO device (CPU, GPU, ...); for --runtime torch: CPU or GPU (CUDA).")]


def bench(
    models: ModelsArg,
    runtime: Annotated[list[str] | None, typer.Option(
        "--runtime", "-r", help="ort, openvino or torch (repeat or comma-separate; default: by file type).")] = None,
    threads: ThreadsOpt = None,
    batch: Annotated[int, typer.Option("--batch", "-b", help="Slices per inference.")] = 1,
    warmup: Annotated[int, typer.Option(help="Untimed runs after the first inference.")] = 10,
    iterations: Annotated[int, typer.Option("--iterations", "-n", help="Timed runs.")] = 100,
    provider: ProviderOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = "CPU",
    size: Annotated[tuple[int, int] | None, typer.Option(
        help="H W of the input for .pt checkpoints (default: their trained size).", show_default=False)] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the full report as JSON.")] = None,
) -> None:
    """Measure latency (median/p90/p99/min/max) and throughput of models on onnxruntime, OpenVINO or torch."""
    from kdc._io import write_json
    from kdc.runtime.bench import Settings, render, run_bench

    runtimes = [r.strip() for item in runtime or [] for r in item.split(",") if r.strip()] or None
    settings = Settings(threads=threads, batch=batch, warmup=warmup, iterations=iterations, providers=provider,
                        precision=precision, device=device, size=tuple(size) if size and None not in size else None)
    artefact = "checkpoint" if runtimes == ["torch"] else "onnx"  # a pretrained name's .pt for torch alone
    report = run_bench([resolve(path, artefact) for path in models], runtimes, settings)
    render(report)
    if json_out is not None:
        write_json(json_out, report)
        typer.echo(f"wrote {json_out}", err=True)


def serve(
    models: Annotated[list[Path], typer.Argument(help="Exported .onnx / .xml models, each served under its file name "
                                                      "without suffix, or pretrained:<run>-<role> (served as "
                                                      "<run>-<role>).", show_default=False)],
    host: Annotated[str, typer.Option(help="Address to bind (use 0.0.0.0 deliberately).")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000; with --protocol mrd 9002).",
                                             show_default=False)] = None,
    engine: EngineOpt = None,
    threads: ThreadsOpt = None,
    provider: ProviderOpt = None,
    precision: PrecisionOpt = None,
    device: Annotated[str, typer.Option(help="OpenVINO device (CPU, GPU, ...).")] = "CPU",
    workers: Annotated[int, typer.Option(help="Inference threads (requests decoded and run at once).")] = 2,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted (413 above).")] = 64.0,
    max_buffer_mb: Annotated[float, typer.Option(
        help="Request bodies held in memory at once, received or waiting for inference (503 above).")] = 256.0,
    max_batch: Annotated[int | None, typer.Option(
        help="Most slices per request (413 above; default: what fits 1 GiB of inference memory).")] = None,
    header_timeout: Annotated[float, typer.Option(help="Seconds to send the request headers (408 after).")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="Seconds to send the request body (408 after).")] = 60.0,
    min_body_rate_mb: Annotated[float, typer.Option(
        help="MiB/s a request body must keep up to keep its memory when others need it (408 after; 0: never).")] = 1.0,
    max_json_values: Annotated[int, typer.Option(
        help="Most values in a request's JSON, counted before parsing (413 above; binary tensors do not count).")
    ] = 1 << 22,
    production: Annotated[bool, typer.Option(
        help="Hide exception details from 500 answers (the log keeps them) and do not serve /openapi.json.")] = False,
    normalise: Annotated[bool, typer.Option(help="Default of the request parameter 'normalise': scale k-space at "
                                                 "scanner scale into the training range and the image back.")] = False,
    protocol: Annotated[str, typer.Option(help="kserve (HTTP, the default port 8000) or mrd (the ISMRMRD streaming "
                                               "protocol of FIRE/OpenRecon/Gadgetron clients, default port 9002; "
                                               "one model).")] = "kserve",
    max_message_mb: Annotated[float, typer.Option(help="mrd: largest message accepted.")] = 64.0,
    max_acquisitions_per_slice: Annotated[int, typer.Option(help="mrd: most acquisitions buffered for one "
                                                                 "slice.")] = 8192,
    max_open_slices_mb: Annotated[float, typer.Option(help="mrd: samples buffered for the open slices of one "
                                                          "connection.")] = 1024.0,
    idle_timeout: Annotated[float, typer.Option(help="mrd: seconds a client may stay silent.")] = 60.0,
    max_connections: Annotated[int, typer.Option(help="mrd: connections served at once.")] = 4,
) -> None:
    """Serve models over the KServe v2 / Open Inference Protocol REST API (Triton and OVMS clients work), or one
    model over the MRD streaming protocol (--protocol mrd, see docs/scanner.md)."""
    if protocol not in ("kserve", "mrd"):
        raise RuntimeModelError(f"--protocol {protocol!r}: expected kserve or mrd")
    if protocol == "mrd":
        serve_mrd(models, host, MRD_PORT if port is None else port, engine, threads, provider, precision, device,
                  max_message_mb, max_acquisitions_per_slice, max_open_slices_mb, idle_timeout,
                  max_connections)
        return
    from kdc.runtime.server import Limits, run_server
    from kdc.runtime.session import load

    port = HTTP_PORT if port is None else port
    if workers < 1 or (max_batch is not None and max_batch < 1):
        raise RuntimeModelError("--workers and --max-batch must be >= 1")
    if min(max_body_mb, max_buffer_mb, header_timeout, body_timeout, max_json_values) <= 0 \
            or max_buffer_mb < max_body_mb or min_body_rate_mb < 0:
        raise RuntimeModelError("--max-body-mb, --header-timeout, --body-timeout and --max-json-values must be > 0, "
                                "--min-body-rate-mb >= 0 and --max-buffer-mb at least --max-body-mb")
    limits = Limits(max_body_bytes=int(max_body_mb * (1 << 20)), max_buffer_bytes=int(max_buffer_mb * (1 << 20)),
                    header_timeout=header_timeout, body_timeout=body_timeout,
                    min_body_rate=min_body_rate_mb * (1 << 20), max_json_values=max_json_values)
    loaded = {}
    for source in models:
        name, path = model_name(source), resolve(source, "onnx")
        if name in loaded:
            raise RuntimeModelError(f"two models are named {name!r}: rename one of the files")
        model = load(path, engine=engine, providers=provider, threads=threads, precision=precision, device=device)
        for warning in model.warnings:
            typer.echo(f"warning: {path.name}: {warning}", err=True)
        loaded[name] = model
        typer.echo(f"serving {name} ({model.backend}) at http://{host}:{port}/v2/models/{name}/infer", err=True)
    run_server(loaded, host=host, port=port, limits=limits, workers=workers, max_batch=max_batch,
               production=production, normalise=normalise)


def serve_mrd(models: list[Path], host: str, port: int, engine: str | None, threads: int | None,
              provider: list[str] | None, precision: str | None, device: str, max_message_mb: float,
              max_acquisitions_per_slice: int, max_open_slices_mb: float, idle_timeout: float,
              max_connections: int) -> None:
    """``kdc serve MODEL --protocol mrd``: one model over the MRD streaming protocol."""
    from kdc.runtime.mrd import MrdLimits, run_mrd_server
    from kdc.runtime.session import load

    if len(models) != 1:
        raise RuntimeModelError(f"--protocol mrd serves one model, got {len(models)}")
    if min(max_message_mb, max_open_slices_mb, idle_timeout) <= 0 or min(max_acquisitions_per_slice,
                                                                         max_connections) < 1:
        raise RuntimeModelError("--max-message-mb, --max-open-slices-mb and --idle-timeout must be > 0, "
                                "--max-acquisitions-per-slice and --max-connections >= 1")
    limits = MrdLimits(int(max_message_mb * (1 << 20)), max_acquisitions_per_slice,
                       int(max_open_slices_mb * (1 << 20)),
                       idle_timeout, max_connections)
    path = resolve(models[0], "onnx")
    model = load(path, engine=engine, providers=provider, threads=threads, precision=precision, device=device)
    for warning in model.warnings:
        typer.echo(f"warning: {path.name}: {warning}", err=True)
    run_mrd_server(model, host, port, limits, log=lambda line: typer.echo(line, err=True))


def mrd_client(
    source: Annotated[Path, typer.Argument(help="ISMRMRD .h5 file to stream.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="ISMRMRD .h5 file of the images returned.")],
    host: Annotated[str, typer.Option(help="Address of the MRD server.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the MRD server.")] = MRD_PORT,
    config: Annotated[str | None, typer.Option(
        help='CONFIG_TEXT to send, e.g. \'{"data_type": "float"}\' (kdc\'s server reads data_type, series_index, '
             "series_description, acceleration, normalise).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 300.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Stream an ISMRMRD file to an MRD server (kdc serve --protocol mrd) and write the images it returns."""
    from kdc.runtime.mrd_client import stream_file

    received = stream_file(source, out, host, port, config, timeout, overwrite)
    for text in received.texts:
        typer.echo(f"server: {text}", err=True)
    typer.echo(f"wrote {len(received.images)} image(s) to {out}")


def triton_repo(
    model: Annotated[Path, typer.Argument(help="Exported .onnx model (or a --precision bf16 OpenVINO .xml).",
                                          show_default=False)],
    repo: Annotated[Path, typer.Option("--repo", "-o", help="Model repository directory (created if missing).")],
    name: Annotated[str | None, typer.Option(help="Model name (default: the file name without suffix).")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Triton max_batch_size when the batch is dynamic.")] = 8,
    instances: Annotated[int, typer.Option(help="Model instances (instance_group count).")] = 1,
    gpu: Annotated[bool, typer.Option(help="Run the instances on GPUs (KIND_GPU).")] = False,
    threads: ThreadsOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model directory.")] = False,
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt + 1/model.onnx) for an exported model."""
    from kdc.runtime.triton import write_triton_repo

    target = write_triton_repo(model, repo, name=name, max_batch_size=max_batch_size, instances=instances,
                               kind="KIND_GPU" if gpu else "KIND_CPU", threads=threads, overwrite=overwrite)
    typer.echo(f"wrote {target}/config.pbtxt and {target}/1/model{model.suffix}")


def reconstruct(
    model: Annotated[Path, typer.Argument(help="Exported .onnx / OpenVINO .xml model, or pretrained:<run>-<role>.",
                                          show_default=False)],
    inputs: Annotated[list[Path], typer.Argument(help="ISMRMRD, fastMRI (single- or multi-coil) or KD-MRI .h5 files, "
                                                      "or centred complex k-space .npy (S, H, W); or - with "
                                                      "--format mrd: an MRD v2 stream on stdin.",
                                                 show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (created; refused if it exists).",
                                             show_default=False)] = None,
    format: Annotated[list[str] | None, typer.Option(
        "--format", "-f", help="nifti, dicom, h5 (repeat or comma-separate; default nifti); mrd with the input -: "
                               "MRD v2 images on stdout.")] = None,
    batch: Annotated[int, typer.Option("--batch", "-b", help="Slices per inference.")] = 8,
    engine: EngineOpt = None,
    threads: ThreadsOpt = None,
    provider: Annotated[list[str] | None, typer.Option(
        "--provider", "--providers", "-p", help="onnxruntime execution providers in priority order (repeat).")] = None,
    precision: PrecisionOpt = None,
    mask: Annotated[Path | None, typer.Option(help="KD-MRI mask .npy (H, W), uncentred, to undersample fully "
                                                   "sampled input.")] = None,
    acc: Annotated[int | None, typer.Option("--acc", help="Undersample fully sampled input retrospectively at "
                                                         "this acceleration (4, 5, 8).")] = None,
    mask_kind: Annotated[str, typer.Option(help="Mask of --acc: random or equispaced.")] = "random",
    mask_seed: Annotated[int, typer.Option(help="Seed of the --acc mask.")] = 0,
    center_fraction: Annotated[float | None, typer.Option(
        help="Fraction of central lines the --acc mask samples (default 0.08/0.06/0.04 at 4/5/8x; needed for "
             "other accelerations).")] = None,
    crop: Annotated[bool, typer.Option(help="Write the central 320x320 (fastMRI's evaluation crop).")] = False,
    dicom_bits: Annotated[int, typer.Option(help="Stored bits of DICOM pixels: 12 or 16.")] = 12,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
) -> None:
    """Reconstruct scanner files with an exported model and write NIfTI, DICOM or fastMRI h5 images (+ metrics)."""
    from kdc.mri.masks import MASK_KINDS
    from kdc.runtime.reconstruct import METRICS_FILE, Settings, reconstruct_files
    from kdc.runtime.session import load
    from kdc.runtime.writers import OutputError, WriteOptions, writers_for

    formats = tuple(f.strip() for item in format or ["nifti"] for f in item.split(",") if f.strip())
    if mask_kind not in MASK_KINDS:
        raise RuntimeModelError(f"--mask-kind {mask_kind!r}: expected one of {list(MASK_KINDS)}")
    if mask is not None and acc is not None:
        raise RuntimeModelError("give --mask or --acc, not both")
    if center_fraction is not None and acc is None:
        raise RuntimeModelError("--center-fraction shapes the mask of --acc: give --acc too")
    streaming = STDIO in inputs or "mrd" in formats
    if streaming and (inputs != [STDIO] or formats != ("mrd",) or out is not None):
        raise RuntimeModelError("an MRD v2 stream is reconstructed alone, from stdin to stdout: kdc reconstruct "
                                "MODEL - --format mrd (no --out, no other input or format)")
    if out is None and not streaming:
        raise RuntimeModelError("missing option --out DIR (the output directory)")
    if not streaming:
        writers_for(list(formats))
    if out is not None and out.exists() and not overwrite:
        raise OutputError(f"{out} exists: choose another --out or pass --overwrite")
    settings = Settings(formats=formats, batch=batch, mask_file=mask, acceleration=acc, mask_kind=mask_kind,
                        mask_seed=mask_seed, center_fraction=center_fraction, crop=crop, overwrite=overwrite,
                        write=WriteOptions(dicom_bits=dicom_bits))
    model = resolve(model, "onnx")
    check_argument_order(model, inputs)
    loaded = load(model, engine=engine, providers=provider, threads=threads, precision=precision)
    for warning in loaded.warnings:
        typer.echo(f"warning: {model.name}: {warning}", err=True)
    if out is None:
        reconstruct_mrd_stream(loaded, settings)
        return
    summary = reconstruct_files(loaded, inputs, out, settings, progress=lambda line: typer.echo(line, err=True))
    metrics = " and " + METRICS_FILE if any("psnr" in v for v in summary["volumes"].values()) else ""
    typer.echo(f"wrote {len(summary['volumes'])} volume(s) to {out} ({', '.join(formats)}{metrics})")


def reconstruct_mrd_stream(model: Any, settings: Any) -> None:
    """``kdc reconstruct MODEL - --format mrd``: an MRD v2 stream from stdin, its images to stdout."""
    import sys

    from kdc.runtime.mrd_v2 import reconstruct_stdin

    images = reconstruct_stdin(model, settings, sys.stdin.buffer, sys.stdout.buffer)
    typer.echo(f"wrote {images} MRD v2 image(s) to stdout", err=True)


def check_argument_order(model: Path, inputs: list[Path]) -> None:
    """One line when ``kdc reconstruct``'s MODEL is a file an input reader claims: a scan, likely swapped with the
    model."""
    from kdc.runtime.readers import READERS
    from kdc.runtime.session import MODEL_SUFFIXES

    if model.suffix in MODEL_SUFFIXES or not model.is_file() or not any(r.claims(model) for r in READERS.values()):
        return
    models = [path for path in inputs if path.suffix in MODEL_SUFFIXES]
    swapped = f" (here: kdc reconstruct {models[0]} {model} ...)" if models else ""
    raise RuntimeModelError(f"{model} is a scan, not a model: usage: kdc reconstruct MODEL SCAN... --out DIR{swapped}")
