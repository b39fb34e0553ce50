"""Artefact formats: each builds its file in a work directory, runs it for the parity gate and writes it atomically.

A format is one class: its constructor ``(graph, example, input_names, workdir)`` builds the artefact, ``run(feeds)
-> {runtime: output}`` runs what was built (reloaded where the format allows) and ``write(contract, out)`` writes it. Graph inputs are ``kspace`` (dynamic batch ``N``)
and, unless the mask is baked, ``mask`` (reconstruction), or ``image_lowres`` (dynamic batch, super-resolution);
the output is ``image``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
import torch
from torch import nn

from kdc import __version__
from kdc._io import atomic_path
from kdc.export import onnx_graph
from kdc.export.report import ExportError
from kdc.runtime.contract import Contract
from kdc.runtime.session import openvino_core

OPSET = 18  # TOOLCHAIN.md: 17 breaks onnxruntime (ReduceL2), >= 20 makes OpenVINO ignore the DFT axis.
OUTPUT_NAME = "image"
#: Name of the contract inside TorchScript ``_extra_files`` and ``.pt2`` ``extra_files``.
CONTRACT_FILE = "kdc_contract.json"
#: Where OpenVINO IR keeps the contract: ``model.get_rt_info(RT_INFO_PATH)``.
RT_INFO_PATH = ["kdc", "contract"]
Feeds = dict[str, np.ndarray]


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence torch's notices about its own export paths (``torch.jit`` deprecation, pytree internals, the
    ONNX exporter's "torchvision is not installed" log lines)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _dynamic_batch(graph: nn.Module, input_names: list[str]) -> tuple[dict[int, Any] | None, ...]:
    """Batch ``N`` of every input but ``mask``, plus the dimensions a graph declares in ``dynamic_dims`` (by input
    position: ``{0: {1: "C"}}``, :class:`kdc.export.architectures.LoweredGraph`)."""
    dims = {"N": torch.export.Dim("N", min=1, max=4096)}
    declared: dict[int, dict[int, str]] = getattr(graph, "dynamic_dims", {})
    shapes = []
    for position, name in enumerate(input_names):
        axes = {} if name == "mask" else {0: "N"}
        axes.update(declared.get(position, {}))
        shapes.append({axis: dims.setdefault(dim, torch.export.Dim(dim, min=1, max=4096)) for axis, dim in axes.items()}
                      or None)
    return tuple(shapes)


class OnnxArtefact:
    """ONNX (dynamo exporter, opset 18), duplicate initializers removed, full checker; parity on onnxruntime CPU."""

    name: ClassVar[str] = "onnx"
    #: The suffixes an output path of this format may have (the first is the usual one).
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)

    def __init__(self, graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], workdir: Path):
        import onnx
        import onnxruntime as ort

        with quiet_torch():
            program = torch.onnx.export(
                graph, example, dynamo=True, opset_version=OPSET, input_names=input_names,
                output_names=[OUTPUT_NAME], dynamic_shapes=_dynamic_batch(graph, input_names), verbose=False,
            )
        self.proto = program.model_proto
        self.duplicates_removed = onnx_graph.remove_duplicate_initializers(self.proto)
        try:
            onnx.checker.check_model(self.proto, full_check=True)
        except onnx.checker.ValidationError as err:
            raise ExportError(f"exported graph fails onnx.checker: {str(err).splitlines()[0]}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(self.proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.runtime = f"onnxruntime {ort.__version__} CPU"

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return {self.runtime: self.session.run([OUTPUT_NAME], feeds)[0]}

    def write(self, contract: Contract, out: Path) -> None:
        flat = {
            "kdc.version": __version__,
            "kdc.task": contract.task,
            "kdc.dc_lowering": contract.dc_lowering,
            "kdc.model_role": contract.model.role,
            "kdc.image_size": "x".join(map(str, contract.image_size)),
            "kdc.parity_max_abs_error": f"{contract.parity_max_abs_error:.3e}",
            "kdc.quantization": contract.quantization_mode,
            "kdc.precision": contract.precision_name,
        }
        onnx_graph.set_contract(self.proto, contract.to_dict(), flat)
        with atomic_path(out) as tmp:
            tmp.write_bytes(self.proto.SerializeToString())


class OpenVINOArtefact(OnnxArtefact):
    """OpenVINO IR (``.xml`` + ``.bin``, f32 weights) converted from the checked ONNX graph; parity on both runtimes
    with OpenVINO forced to f32 (it defaults to bf16 on this CPU, TOOLCHAIN.md)."""

    name: ClassVar[str] = "openvino"
    suffixes: ClassVar[tuple[str, ...]] = (".xml",)

    def __init__(self, graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], workdir: Path):
        import openvino as ov

        super().__init__(graph, example, input_names, workdir)
        self.workdir = workdir
        onnx_path = workdir / "model.onnx"
        onnx_path.write_bytes(self.proto.SerializeToString())
        self.model = ov.convert_model(onnx_path)
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
        self.compiled = openvino_core().compile_model(self.model, "CPU", config)
        self.ov_runtime = f"openvino {ov.get_version().split('-')[0]} CPU f32"

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return {**super().run(feeds), self.ov_runtime: self.compiled(feeds)[OUTPUT_NAME]}

    def write(self, contract: Contract, out: Path) -> None:
        import openvino as ov

        self.model.set_rt_info(json.dumps(contract.to_dict(), sort_keys=True), RT_INFO_PATH)
        staged = self.workdir / "ir" / "model.xml"
        staged.parent.mkdir()
        ov.save_model(self.model, staged, compress_to_fp16=False)
        # The .bin is renamed into place before the .xml that names it: no reader sees an .xml without weights.
        with atomic_path(out) as xml_tmp, atomic_path(out.with_suffix(".bin")) as bin_tmp:
            shutil.copyfile(staged.with_suffix(".bin"), bin_tmp)
            shutil.copyfile(staged, xml_tmp)


class TorchScriptArtefact:
    """``torch.jit.trace`` module (no kdc code needed to load it); the contract is in ``_extra_files``."""

    name: ClassVar[str] = "torchscript"
    suffixes: ClassVar[tuple[str, ...]] = (".pt", ".ts")

    def __init__(self, graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], workdir: Path):
        self.input_names = input_names
        staged = workdir / f"model.{self.name}"  # torch.export.load wants a .pt2 name
        with quiet_torch():
            self.program = self._compile(graph, example, input_names)
            self._save(staged, {})
            self.loaded = self._load(staged)
        self.runtime = f"torch {torch.__version__.split('+')[0]} ({self.name}, reloaded)"

    @staticmethod
    def _compile(graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str]) -> Any:
        with torch.no_grad():
            return torch.jit.trace(graph, example, check_trace=False)

    def _save(self, target: Path | BinaryIO, extra_files: dict[str, str]) -> None:
        torch.jit.save(self.program, target, _extra_files=extra_files)

    @staticmethod
    def _load(path: Path) -> Any:
        return torch.jit.load(str(path))

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        with torch.no_grad():
            output = self.loaded(*(torch.from_numpy(feeds[name]) for name in self.input_names))
        return {self.runtime: output.numpy()}

    def write(self, contract: Contract, out: Path) -> None:
        with atomic_path(out) as tmp, open(tmp, "wb") as file, quiet_torch():
            self._save(file, {CONTRACT_FILE: json.dumps(contract.to_dict(), sort_keys=True)})


class ExportedProgramArtefact(TorchScriptArtefact):
    """``torch.export`` program saved as ``.pt2`` (dynamic batch); the contract is in ``extra_files``."""

    name: ClassVar[str] = "pt2"
    suffixes: ClassVar[tuple[str, ...]] = (".pt2",)

    @staticmethod
    def _compile(graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str]) -> Any:
        return torch.export.export(graph, example, dynamic_shapes=_dynamic_batch(graph, input_names))

    def _save(self, target: Path | BinaryIO, extra_files: dict[str, str]) -> None:
        torch.export.save(self.program, target, extra_files=extra_files)

    @staticmethod
    def _load(path: Path) -> Any:
        return torch.export.load(path).module()


Artefact = type[OnnxArtefact] | type[TorchScriptArtefact]
#: ``--format`` name -> artefact class.
FORMATS: dict[str, Artefact] = {
    cls.name: cls for cls in (OnnxArtefact, OpenVINOArtefact, TorchScriptArtefact, ExportedProgramArtefact)
}


def format_for(out: Path, fmt: str | None) -> Artefact:
    """The artefact class of ``fmt``, else of ``out``'s suffix; a suffix that contradicts ``fmt`` is refused."""
    by_suffix = {suffix: cls for cls in FORMATS.values() for suffix in cls.suffixes}
    known = ", ".join(f"{suffix} ({cls.name})" for suffix, cls in by_suffix.items())
    if fmt is None:
        if out.suffix not in by_suffix:
            raise ExportError(f"{out}: cannot tell the format from the suffix {out.suffix!r}: use one of {known}")
        return by_suffix[out.suffix]
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: expected one of {sorted(FORMATS)}")
    if out.suffix not in FORMATS[fmt].suffixes:
        raise ExportError(f"{out}: --format {fmt} writes files ending in {' or '.join(FORMATS[fmt].suffixes)}")
    return FORMATS[fmt]
