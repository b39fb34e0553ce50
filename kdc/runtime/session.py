"""Load an exported model on onnxruntime or OpenVINO and reconstruct: numpy in, numpy out, no torch.

``load(path)`` reads the kdc contract stored in the file (ONNX ``metadata_props["kdc.contract"]``, OpenVINO IR
``rt_info["kdc"]["contract"]``), checks it against the graph and returns a :class:`Reconstructor`. Every call
validates names, shapes, dtypes and finiteness against the contract first. A reconstructor is safe to call from
many threads at once (onnxruntime sessions are; OpenVINO gets one infer request per concurrent call).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kdc.errors import KdcError, ListedWarning
from kdc.mri.masks import MaskError, check_sampling, line_mask_input, line_mask_shape, validate_mask
from kdc.mri.layout import from_channels
from kdc.mri.normalise import zero_filled_peak
from kdc.mri.phase import PHASE_WARNING_FRACTION, centre_imaginary_fraction, symmetric_centre
from kdc.runtime.contract import ENGINES, PRECISIONS, Contract, Precision
from kdc.runtime.onnx_metadata import metadata_props
from kdc.runtime.tensors import (
    EXAMPLE_COILS, RuntimeModelError, coil_mask_input, example_coil_feeds, example_image, example_kspace, example_mask,
)
from kdc.tasks import TaskSpec

#: What :func:`load` reads: ONNX (onnxruntime or OpenVINO) and OpenVINO IR.
MODEL_SUFFIXES = (".onnx", ".xml")
#: PyTorch files (checkpoints, TorchScript, torch.export), which only ``kdc export`` and ``kdc bench`` read.
TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".pt2", ".ckpt")
#: What :meth:`Reconstructor.reconstruct` can return.
OUTPUTS = ("magnitude", "complex")
#: Short names accepted for onnxruntime execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
CPU_PROVIDER = "CPUExecutionProvider"
#: Provider options that pin each precision; a provider missing from a precision's entry cannot run it.
PRECISION_OPTIONS: dict[str, dict[str, dict[str, str]]] = {
    # CUDA computes f32 convolutions and matmuls in TF32 unless told not to.
    "f32": {CPU_PROVIDER: {}, "CUDAExecutionProvider": {"use_tf32": "0"}, "TensorrtExecutionProvider": {},
            "OpenVINOExecutionProvider": {"precision": "FP32"}, "DmlExecutionProvider": {},
            "CoreMLExecutionProvider": {}},
    "f16": {"TensorrtExecutionProvider": {"trt_fp16_enable": "True"}, "OpenVINOExecutionProvider": {"precision": "FP16"}},
    "bf16": {},
}
#: Where a contract is stored: ONNX metadata key, IR rt_info path, and the path OpenVINO gives ONNX metadata.
ONNX_CONTRACT_KEY = "kdc.contract"
IR_CONTRACT_PATH = ["kdc", "contract"]
OV_ONNX_CONTRACT_PATH = ["framework", ONNX_CONTRACT_KEY]
#: Rules on the values of inputs, by input name, beyond dtype, shape and finiteness: ``rule(array, source)``
#: raises a :class:`kdc.errors.KdcError`. A mask's 1-D Cartesian form is its contract shape ``(1, 1, 1, W)``.
VALUE_RULES: dict[str, Callable[[np.ndarray, str], None]] = {"mask": check_sampling}
#: Shape of a graph's tensors by name; None marks a dynamic dimension.
GraphShapes = Mapping[str, tuple[int | None, ...]]


class PhaseWarning(UserWarning):
    """K-space whose image has phase, given to a model that reconstructs real images."""


class PrecisionWarning(ListedWarning):
    """A precision asked of :func:`load` that the file's export did not validate (also listed in ``warnings``)."""


def default_precision(contract: Contract, engine: str) -> str:
    """The precision hint :func:`load` uses on ``engine`` when none is asked: the validated one on its engine."""
    validated_engine, hint = contract.validated_precision()
    return hint if validated_engine == engine else "f32"


class Reconstructor:
    """An exported model ready to run. Build it with :func:`load`."""

    engine = ""

    def __init__(self, path: Path, contract: Contract, graph_inputs: list[str], backend: str,
                 threads: int | None, warnings: list[str], graph_shapes: GraphShapes) -> None:
        self.path = path
        #: The contract stored in the file (:class:`kdc.runtime.contract.Contract`; ``to_dict()`` gives its JSON).
        self.contract = contract
        self.backend = backend
        self.threads = threads
        #: Problems found while loading, e.g. nodes that fell back from a GPU to the CPU.
        self.warnings = warnings
        self.inputs, self.outputs = contract.inputs, contract.outputs
        if sorted(self.input_names) != sorted(graph_inputs):
            raise RuntimeModelError(
                f"{path}: contract inputs {self.input_names} do not match the graph inputs {graph_inputs}"
            )
        check_graph(path, contract, graph_shapes)
        #: The task (:mod:`kdc.tasks`) the contract names; contracts from before tasks had names are ``recon``.
        self.task_spec: TaskSpec = contract.task_spec

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.contract.image_size

    @property
    def task(self) -> str:
        """The contract's task: ``recon``, ``recon_complex`` (k-space + mask in) or ``sr`` (``image_lowres`` in)."""
        return self.contract.task

    @property
    def mask_baked(self) -> bool:
        """True for a k-space model with its mask in the graph (an image model has no mask at all)."""
        return self.task_spec.takes_kspace and "mask" not in self.input_names

    @property
    def mask_axis(self) -> int | None:
        """-1 when the model's mask samples whole columns, -2 whole rows, None for a 2-D ``(1, 1, H, W)`` mask."""
        if self.task_spec.kspace_layout == "coils_last":  # fastMRI's (1, 1, 1, W, 1) column mask
            return -1
        if self.mask_baked:
            return -2 if self.contract.mask_rows is not None else -1
        shape = self.inputs[self.input_names.index("mask")].shape
        return -2 if shape[-1] == 1 else -1 if shape[-2] == 1 else None

    @property
    def role(self) -> str:
        return self.contract.model.role

    def check(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against the contract; return them as contiguous arrays."""
        missing = [name for name in self.input_names if name not in feeds]
        unexpected = [name for name in feeds if name not in self.input_names]
        if missing or unexpected:
            raise RuntimeModelError(
                f"model {self.name!r} takes inputs {self.input_names}; "
                + "; ".join(filter(None, [missing and f"missing {missing}", unexpected and f"unexpected {unexpected}"]))
            )
        for spec in self.inputs:
            spec.check(feeds[spec.name])
        for name, rule in VALUE_RULES.items():
            if name in feeds:
                try:
                    rule(feeds[name], f"input {name!r}")
                except MaskError as err:
                    raise RuntimeModelError(str(err)) from None
        return {name: np.ascontiguousarray(feeds[name]) for name in self.input_names}

    def run(self, feeds: Mapping[str, np.ndarray], *, normalise: bool = False) -> dict[str, np.ndarray]:
        """Validate and run: input name -> array in, output name -> array out.

        K-space outside the mask (given or baked) is zeroed first, as the contract requires, so fully sampled
        k-space may be sent with the mask to apply. ``normalise=True`` treats the batch as one volume at scanner
        scale: the model sees it scaled so that its zero-filled magnitude peaks at 1 (the training range) and the
        outputs are scaled back. A reconstruction model given k-space whose image has phase warns
        (:class:`PhaseWarning`) with the measured share. Outputs with NaN or infinity raise
        :class:`RuntimeModelError`.
        """
        results, notes = self.run_with_notes(feeds, normalise=normalise)
        for note in notes:
            warnings.warn(note, PhaseWarning, stacklevel=2)
        return results

    def run_with_notes(self, feeds: Mapping[str, np.ndarray], *, normalise: bool = False
                       ) -> tuple[dict[str, np.ndarray], list[str]]:
        """:meth:`run`, returning its warnings as lines instead of emitting them (for servers)."""
        feeds = self.check(feeds)
        notes: list[str] = []
        scale = np.float32(1.0)
        if not self.task_spec.takes_kspace:
            if normalise:
                raise RuntimeModelError(f"normalise applies to reconstruction models; {self.name!r} is {self.task!r}")
        elif self.task_spec.kspace_layout != "channels":
            if normalise:
                raise RuntimeModelError(f"normalise applies to kdc's single-coil models; {self.name!r} "
                                        f"({self.task!r}) takes k-space at the file's scale")
            feeds["kspace"] = zero_outside(feeds["kspace"], feeds["mask"])
        else:
            feeds["kspace"] = zero_outside(feeds["kspace"], feeds["mask"] if "mask" in feeds else self.baked_mask())
            if not self.task_spec.is_complex and (note := self.phase_note(feeds)):
                notes.append(note)
            if normalise:
                with np.errstate(over="ignore", invalid="ignore"):  # a peak beyond float32: outputs refused below
                    scale = np.float32(zero_filled_peak(feeds["kspace"]) or 1.0)
        if scale == 1:
            return self.finite(self._infer(feeds), feeds, normalise), notes
        results = self._infer({**feeds, "kspace": feeds["kspace"] / scale})
        return self.finite({name: array * scale for name, array in results.items()}, feeds, normalise), notes

    def finite(self, results: dict[str, np.ndarray], feeds: Mapping[str, np.ndarray], normalised: bool
               ) -> dict[str, np.ndarray]:
        """``results``, unless an output holds NaN or infinity (from finite input, values beyond float32's range
        inside the model): then one line naming the count, never NaN pixels."""
        for name, array in results.items():
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad:
                largest = max(float(np.abs(value).max(initial=0)) for value in feeds.values())
                hint = ("its image exceeds float32's range; scale the input down" if normalised else
                        "scale the input into the training range" + " (normalise)" * self.task_spec.takes_kspace)
                raise RuntimeModelError(
                    f"model {self.name!r} gave {bad} NaN or infinite values of {array.size} in output {name!r} from "
                    f"finite input (largest magnitude {largest:.3g}): {hint}")
        return results

    def phase_note(self, feeds: Mapping[str, np.ndarray]) -> str | None:
        """For a model of real images: a warning line if the image of the k-space in ``feeds`` has more than 1 % of
        its energy imaginary, or if the mask misses the DC column (in kdc's uncentred convention: centred k-space
        given as uncentred). Row-sampled and 2-D masks are not measured."""
        mask = feeds["mask"] if "mask" in feeds else self.baked_mask()
        if mask.shape[-2] != 1:
            return None
        lines = mask.reshape(-1, mask.shape[-1])[0]
        if not lines[0]:
            return (f"the mask given to model {self.name!r} does not sample the DC column (index 0 of kdc's uncentred "
                    "k-space): if the k-space and mask are centred (fastMRI, scanners), convert them with "
                    "kspace_channels/mask_columns(..., centred=True)")
        columns = symmetric_centre(lines)
        centre = feeds["kspace"][..., columns]  # only the centre becomes complex: batches can be large
        fraction = centre_imaginary_fraction(from_channels(centre), columns, lines.size)
        if fraction is None or fraction <= PHASE_WARNING_FRACTION:
            return None
        return (f"model {self.name!r} reconstructs real images, but {fraction:.1%} of the input image's energy is "
                "imaginary (phase): that part is lost. Check the k-space centring (centred=True for fastMRI/scanner "
                "k-space) or use a complex model")

    def reconstruct(self, kspace: np.ndarray, mask: np.ndarray | None = None, *, normalise: bool = False,
                    output: str = "magnitude") -> np.ndarray:
        """Undersampled k-space ``(N, 2, H, W)`` (+ mask, unless baked) -> image ``(N, 1, H, W)``; a multi-coil model
        takes fastMRI's centred complex ``(N, C, H, W)`` and ``(W,)`` mask instead (:meth:`reconstruct_coils`).

        ``mask`` is uncentred: one line ``(W,)`` (or ``(H,)`` for a model whose mask samples rows), ``(H, W)``, or the
        model input shape. K-space outside the sampled lines is zeroed (:meth:`run`). For complex or centred
        (fastMRI, scanner) k-space use :func:`kdc.runtime.kspace_channels` and
        :func:`kdc.runtime.mask_columns` with ``centred=True``. ``normalise=True``: see :meth:`run`.
        ``output="magnitude"`` gives float32 (the real image of a magnitude model, ``|x|`` of a complex one);
        ``output="complex"`` gives complex64 and needs a complex model.
        """
        if not self.task_spec.takes_kspace:
            raise RuntimeModelError(f"model {self.name!r} is a {self.task!r} model, not a reconstruction: call "
                                    f"run({{{self.input_names[0]!r}: ...}})")
        if self.task_spec.kspace_layout == "coils_last":
            if normalise or output != "magnitude":
                raise RuntimeModelError(f"model {self.name!r} ({self.task!r}) returns magnitude images of k-space at "
                                        "the file's scale: call reconstruct(kspace, mask) without normalise or output")
            return self.reconstruct_coils(kspace, mask)
        if output not in OUTPUTS:
            raise RuntimeModelError(f"output={output!r}: expected one of {list(OUTPUTS)}")
        if output == "complex" and not self.task_spec.is_complex:
            raise RuntimeModelError(f"model {self.name!r} reconstructs real images (output_kind "
                                    f"{self.contract.output_kind!r}): output='complex' needs a model trained "
                                    "with --image complex")
        kspace = np.asarray(kspace)
        if np.iscomplexobj(kspace):
            raise RuntimeModelError("kspace is complex: convert it with kdc.runtime.kspace_channels(kspace)")
        if not np.issubdtype(kspace.dtype, np.floating):
            raise RuntimeModelError(f"kspace must hold floats, got dtype {kspace.dtype}")
        kspace = kspace.astype(np.float32, copy=False)
        self.inputs[self.input_names.index("kspace")].check(kspace)
        if self.mask_baked:
            if mask is not None and not np.array_equal(self.mask_input(mask), self.baked_mask()):
                raise RuntimeModelError("this model has its mask baked in and the given mask differs from it")
            feeds = {"kspace": kspace}
        else:
            if mask is None:
                raise RuntimeModelError(f"model {self.name!r} takes a mask: pass reconstruct(kspace, mask)")
            feeds = {"kspace": kspace, "mask": self.mask_input(mask)}
        image = self.run(feeds, normalise=normalise)[self.output_names[0]]
        return self.task_spec.complex_image(image) if output == "complex" else self.task_spec.magnitude(image)

    def reconstruct_coils(self, kspace: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """A multi-coil model (``kspace_layout`` ``coils_last``, fastMRI's VarNet): centred complex k-space
        ``(N, C, H, W)`` (or ``(C, H, W)``) and its centred column mask ``(W,)`` -> ``(N, H, W)`` magnitude."""
        kspace = np.asarray(kspace)
        if not np.iscomplexobj(kspace) or kspace.ndim not in (3, 4):
            raise RuntimeModelError(f"model {self.name!r} takes complex centred k-space (N, C, H, W), got "
                                    f"{kspace.dtype} {kspace.shape}")
        if mask is None:
            raise RuntimeModelError(f"model {self.name!r} takes a mask: pass reconstruct(kspace, mask)")
        kspace = kspace[None] if kspace.ndim == 3 else kspace
        feeds = {"kspace": np.stack([kspace.real, kspace.imag], axis=-1).astype(np.float32),
                 "mask": coil_mask_input(mask, self.image_size[1])}
        return self.run(feeds)[self.output_names[0]]

    def mask_input(self, mask: np.ndarray) -> np.ndarray:
        """A user's uncentred mask (see :meth:`reconstruct`) as this model's mask input, checked."""
        try:
            if self.mask_axis is None:
                return validate_mask(np.asarray(mask).reshape(self.image_size), self.image_size)[None, None]
            return line_mask_input(mask, self.image_size, self.mask_axis)
        except (KdcError, ValueError) as err:
            raise RuntimeModelError(str(err)) from None

    def baked_mask(self) -> np.ndarray:
        """The ``(1, 1, 1, W)`` (columns) or ``(1, 1, H, 1)`` (rows) mask baked into the graph."""
        axis = self.mask_axis
        mask = np.zeros(line_mask_shape(self.image_size, axis), dtype=np.float32)
        indices = self.contract.mask_rows if axis == -2 else self.contract.mask_columns
        mask.reshape(-1)[list(indices or ())] = 1  # from_dict: a baked mask has its indices
        return mask

    def example_feeds(self, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """Random undersampled k-space (and a mask at the contract's acceleration) of the model's size; for a
        task with an image input (super-resolution), a random image."""
        if not self.task_spec.takes_kspace:
            return {self.input_names[0]: example_image(batch, self.image_size, seed)}
        if self.task_spec.kspace_layout == "coils_last":
            coils = self.inputs[0].shape[1]
            return example_coil_feeds(batch, coils if type(coils) is int else EXAMPLE_COILS, self.image_size,
                                      self.contract.acceleration or 1.0, seed)
        if self.mask_baked:
            mask = self.baked_mask()
        else:
            axis = -1 if self.mask_axis is None else self.mask_axis
            line = example_mask(self.image_size[axis], self.contract.acceleration or 1.0)
            shape = self.inputs[self.input_names.index("mask")].shape
            mask = np.ascontiguousarray(np.broadcast_to(line.reshape(line_mask_shape(self.image_size, axis)), shape))
        kspace = example_kspace(batch, self.image_size, mask, seed)
        return {"kspace": kspace} if self.mask_baked else {"kspace": kspace, "mask": mask}

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, backend={self.backend!r}, threads={self.threads})"


def zero_outside(kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``kspace`` ``(N, 2, H, W)`` zeroed outside the 0/1 ``mask`` (a model input shape), as the contract requires:
    the array itself when it already is (pre-masked input costs no copy), else a masked copy (fully sampled
    k-space sent with a mask, as a scanner integrator would)."""
    unsampled = mask[0] == 0
    if not any(np.any(np.where(unsampled, image, 0)) for image in kspace):
        return kspace
    return kspace * mask


def check_graph(path: Path, contract: Contract, graph: GraphShapes) -> None:
    """Refuse a contract whose tensor shapes differ from the graph's, so that a bad file fails at load (``kdc serve``
    does not start) rather than at the first request."""
    size = list(contract.image_size)
    for spec in (*contract.inputs, *contract.outputs):
        if spec.name not in graph:
            raise RuntimeModelError(f"{path}: contract tensor {spec.name!r} is not in the graph ({sorted(graph)})")
        actual = graph[spec.name]
        # A named (dynamic) contract dimension needs a dynamic graph one; a fixed one, the same size or a dynamic one.
        if len(actual) != len(spec.shape) or not all(
                got is None if isinstance(want, str) else type(want) is int and got in (None, want)
                for want, got in zip(spec.shape, actual)):
            shown = "(" + ", ".join("?" if d is None else str(d) for d in actual) + ")"
            raise RuntimeModelError(f"{path}: contract shape of {spec.name!r} {spec.describe()} differs from the "
                                    f"graph's {shown}")
    for spec in contract.outputs:
        if list(spec.shape[-2:]) != size:
            raise RuntimeModelError(f"{path}: contract 'image_size' {size} differs from the shape of output "
                                    f"{spec.name!r} {spec.describe()}")


def parse_contract(text: str | None, path: Path) -> Contract:
    """The contract stored as JSON ``text`` in the file ``path``, checked (:meth:`Contract.from_dict`)."""
    if not text:
        raise RuntimeModelError(f"{path}: no kdc contract in the model's metadata; export it with `kdc export`")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RuntimeModelError(f"{path}: kdc contract is not valid JSON ({err})") from None
    return Contract.from_dict(data, path)


def resolve_providers(providers: list[str] | None, precision: str) -> list[str]:
    """Full onnxruntime provider names (aliases allowed), each available here and able to run ``precision``."""
    import onnxruntime as ort

    names = [PROVIDER_ALIASES.get(p.lower(), p) for p in (providers or ["cpu"])]
    available = ort.get_available_providers()
    for name in names:
        if name not in available:
            raise RuntimeModelError(f"execution provider {name} is not available here; available: {available}")
        if name not in PRECISION_OPTIONS[precision]:
            raise RuntimeModelError(f"{name} cannot run at {precision} in kdc (onnxruntime runs the graph's f32)")
    return names


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (onnxruntime's log) into the yielded list."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def fallback_warnings(log: list[str], providers: list[str], active: list[str]) -> list[str]:
    """Warnings for requested providers the session dropped and nodes placed on the CPU despite a GPU provider."""
    warnings = [f"{name} was requested but the session does not use it" for name in providers if name not in active]
    if any(name != CPU_PROVIDER for name in active):
        placed = {m.group(1): int(m.group(2))
                  for m in re.finditer(r"placed on \[(\w+)\]\. Number of nodes: (\d+)", "\n".join(log))}
        if placed.get(CPU_PROVIDER):
            total = sum(placed.values())
            warnings.append(f"{placed[CPU_PROVIDER]} of {total} nodes fell back to {CPU_PROVIDER} "
                            f"(placements: {placed}); run with a verbose onnxruntime log to see which")
    return warnings


#: onnxruntime's CPU layout optimisation that stores feature maps in blocks of channels (16 with AVX-512, 8 with
#: AVX2). A model narrower than a block pays for the padding: the 4-channel test student (1637 slices of 40x32) peaked
#: at 200 MB with it and 104 MB without, and ran 1.6x slower; the 32-channel demo students run 1.35-1.5x faster with it.
NCHWC_OPTIMIZER = "NchwcTransformer"
NCHWC_BLOCK = 16
class OrtReconstructor(Reconstructor):
    """A model on an onnxruntime ``InferenceSession`` (thread-safe ``run``)."""

    engine = "onnxruntime"

    def __init__(self, path: Path, *, providers: list[str] | None = None, threads: int | None = None,
                 precision: str | None = None, provider_options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        import onnxruntime as ort

        precision = precision or "f32"  # onnxruntime's CPU provider has no bf16 kernels; every float graph has f32
        names = resolve_providers(providers, precision)
        options_list = [{**PRECISION_OPTIONS[precision][name], **dict((provider_options or {}).get(name, {}))}
                        for name in names]
        if threads and "OpenVINOExecutionProvider" in names:
            options_list[names.index("OpenVINOExecutionProvider")].setdefault("num_of_threads", str(threads))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        gpu = any(name != CPU_PROVIDER for name in names)
        if gpu:
            options.log_severity_level = 0  # verbose: the node placements name what fell back to the CPU

        def open_session(disabled_optimizers: list[str]) -> tuple[Any, list[str]]:
            """The session and, with a GPU provider, onnxruntime's log lines (they name the node placements)."""
            lines: list[str] = []
            try:
                with captured_stderr() if gpu else contextlib.nullcontext(lines) as lines:
                    session = ort.InferenceSession(str(path), options, providers=names, provider_options=options_list,
                                                   disabled_optimizers=disabled_optimizers)
            except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
                raise RuntimeModelError(f"{path}: onnxruntime cannot load it ({type(err).__name__}: {err})") from None
            return session, lines

        self.session, log = open_session([])
        contract = parse_contract(self.session.get_modelmeta().custom_metadata_map.get(ONNX_CONTRACT_KEY), path)
        if contract.model.width < NCHWC_BLOCK:
            self.session, log = open_session([NCHWC_OPTIMIZER])
        active = self.session.get_providers()
        # Give the CPU arena's memory back after each run: a large batch would otherwise hold its peak for good.
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        used = [name for name in names if name in active]
        backend = f"onnxruntime {ort.__version__} {'+'.join(used)} {precision}"
        graph_shapes = {node.name: tuple(d if isinstance(d, int) else None for d in node.shape)
                        for node in (*self.session.get_inputs(), *self.session.get_outputs())}
        super().__init__(path, contract, [i.name for i in self.session.get_inputs()], backend, threads,
                         fallback_warnings(log, names, active), graph_shapes)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds, self.run_options)))


@functools.cache
def openvino_core() -> Any:
    """The one OpenVINO ``Core`` of this process, shared by every model kdc compiles.

    Each Core's CPU plugin gives the thread that creates it a new signal stack and, when the Core is freed,
    restores the stack it found, even if that one was freed meanwhile: two Cores freed in the order they were made
    left the main thread on an unmapped signal stack, and the next signal with a Python handler (SIGCHLD, once
    torch's DataLoader has run workers) killed the process with SIGSEGV. One Core that lives until exit cannot."""
    import openvino as ov

    return ov.Core()


class OpenVINOReconstructor(Reconstructor):
    """A model compiled by OpenVINO at ``precision``, by default the one the file was validated at on OpenVINO
    (``kdc export --precision bf16``), else f32 (the CPU plugin would default to bf16 where the CPU has it)."""

    engine = "openvino"

    def __init__(self, path: Path, *, device: str = "CPU", threads: int | None = None, precision: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        import openvino as ov

        core = openvino_core()
        try:
            model = core.read_model(str(path))
        except Exception as err:  # OpenVINO raises RuntimeError with the parser's message
            raise RuntimeModelError(f"{path}: OpenVINO cannot read it ({err})") from None
        contract_path = IR_CONTRACT_PATH if path.suffix == ".xml" else OV_ONNX_CONTRACT_PATH
        text = model.get_rt_info(contract_path).astype(str) if model.has_rt_info(contract_path) else None
        contract = parse_contract(text, path)
        precision = precision or default_precision(contract, self.engine)
        settings: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            settings["INFERENCE_NUM_THREADS"] = threads
        settings.update(config or {})
        try:
            self.compiled = core.compile_model(model, device, settings)
        except Exception as err:
            raise RuntimeModelError(f"{path}: OpenVINO cannot compile it for {device} ({err})") from None
        self.requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        graph_inputs = [port.get_any_name() for port in self.compiled.inputs]
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        backend = f"openvino {ov.get_version().split('-')[0]} {device} {actual}"
        warnings = [] if actual == precision else [f"asked for {precision}, {device} runs {actual}"]
        graph_shapes = {name: tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
                        for port in (*self.compiled.inputs, *self.compiled.outputs) for name in port.get_names()}
        super().__init__(path, contract, graph_inputs, backend, threads, warnings, graph_shapes)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            request = self.requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            results = request.infer(feeds)
            return {name: np.array(results[name], copy=True) for name in self.output_names}
        finally:
            self.requests.put(request)


def load(path: str | os.PathLike[str], *, engine: str | None = None, providers: list[str] | None = None,
         threads: int | None = None, precision: str | None = None, device: str = "CPU",
         options: Mapping[str, Any] | None = None) -> Reconstructor:
    """Load an exported ``.onnx`` or OpenVINO ``.xml`` model.

    ``engine``: ``"ort"`` (onnxruntime) or ``"openvino"`` (reads ``.onnx`` too); by default the engine the file was
    validated on (OpenVINO for ``kdc export --precision bf16``), else onnxruntime for ``.onnx`` and OpenVINO for
    ``.xml``. ``providers``: onnxruntime execution providers in priority order, full names or ``cpu``, ``cuda``,
    ``tensorrt``, ``openvino``. ``threads``: intra-op threads (None: the runtime's default). ``precision``: ``f32``,
    ``f16`` or ``bf16`` where the engine can; by default the precision the file was validated at on that engine,
    else f32. A precision the export did not validate warns (:class:`PrecisionWarning`, also in ``warnings``).
    ``device``: OpenVINO device. ``options``: onnxruntime provider options by provider name, or extra OpenVINO
    compile properties.
    """
    path = Path(path)
    if not path.is_file():
        raise RuntimeModelError(f"{path}: model file not found")
    if path.suffix in TORCH_SUFFIXES:
        raise RuntimeModelError(f"{path}: a PyTorch file, which the runtime does not run: export the checkpoint "
                                f"(kdc export {path} --out {path.with_suffix('.onnx').name}) and use the .onnx")
    if path.suffix not in MODEL_SUFFIXES:
        raise RuntimeModelError(f"{path}: not an exported model: expected {' or '.join(MODEL_SUFFIXES)}")
    if engine is None:
        engine = "openvino" if path.suffix == ".xml" else validated_engine(path) or "ort"
    if engine not in ENGINES:
        raise RuntimeModelError(f"unknown engine {engine!r}: expected one of {list(ENGINES)}")
    if precision is not None and precision not in PRECISIONS:
        raise RuntimeModelError(f"unknown precision {precision!r}: expected one of {list(PRECISIONS)}")
    if threads is not None and threads < 1:
        raise RuntimeModelError(f"threads must be >= 1, got {threads}")
    model: Reconstructor
    if engine == "openvino":
        model = OpenVINOReconstructor(path, device=device, threads=threads, precision=precision, config=options)
    elif path.suffix != ".onnx":
        raise RuntimeModelError(f"{path}: onnxruntime loads .onnx files; OpenVINO IR (.xml) runs on the openvino "
                                "engine")
    else:
        model = OrtReconstructor(path, providers=providers, threads=threads, precision=precision,
                                 provider_options=options)
    if precision is not None and (note := unvalidated_note(model, precision)):
        model.warnings.append(note)
        warnings.warn(note, PrecisionWarning, stacklevel=2)
    return model


def validated_engine(path: Path) -> str | None:
    """The engine an ONNX file's export validated it on, read from its metadata before any session exists."""
    text = metadata_props(path).get(ONNX_CONTRACT_KEY)
    try:
        contract = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None  # the engine that loads it names the problem
    precision = Precision.from_dict(contract.get("precision")) if isinstance(contract, dict) else None
    return precision.validated()[0] if precision else None


def unvalidated_note(model: Reconstructor, precision: str) -> str | None:
    """A line when ``precision`` was not validated by the export of ``model`` (f32 always is)."""
    _, validated = model.contract.validated_precision()
    if precision in ("f32", validated):
        return None
    validated_at = "f32" if validated == "f32" else f"f32 and {validated}"
    hint = " (kdc export --precision bf16 gates it on PSNR)" if precision == "bf16" else ""
    return f"{model.path.name} was validated at {validated_at}, not {precision}: its accuracy there is unmeasured{hint}"
