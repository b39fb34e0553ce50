"""The kdc contract as typed records: what ``kdc export`` writes into every artefact and the runtime reads back.

One schema for both sides, numpy- and torch-free: :mod:`kdc.export.contract` assembles the JSON object and parses it
with :meth:`Contract.from_dict`, so a file kdc writes passes the checks every loader applies; :func:`kdc.runtime.load`,
``kdc reconstruct`` and ``kdc serve`` read the same fields as attributes. ``from_dict`` refuses a malformed field with
one line naming the file and the field; :meth:`Contract.to_dict` gives back the JSON object it was read from, key for
key (the artefacts, the C++ example and Triton repositories read that JSON). Fields kdc does not read (descriptions,
metrics, lowering notes) travel in ``extra``; a typed field an object lacks (files from before it existed, or a field
another task has) is listed in ``absent`` and left out again. docs/export.md explains each field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdc.errors import KdcError
from kdc.runtime.tensors import RuntimeModelError
from kdc.tasks import RECON, TaskSpec, get_task

#: Bump when a field changes meaning.
CONTRACT_VERSION = 1
#: Tensor dtypes a contract may declare (kdc exports float32 inputs and outputs, quantized models too).
DTYPES = ("float32",)
#: Runtimes a contract's ``precision`` may name, and the precision hints they take.
ENGINES = ("ort", "openvino")
PRECISIONS = ("f32", "f16", "bf16")
#: Feature-map width assumed for a contract that does not state ``model.config.channels``.
DEFAULT_WIDTH = 64


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a crafted contract must not flood an error line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def is_number(value: Any) -> bool:
    """A finite int or float (numpy's float64 too, as the export computes some), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def encoded(value: Any) -> Any:
    """A field value as JSON: records as objects, tuples as lists."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, tuple):
        return [encoded(item) for item in value]
    return value


@dataclass(frozen=True)
class Record:
    """A JSON object read into typed fields (see the module docstring)."""

    #: Keys kdc does not read, verbatim.
    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    #: Typed keys the object did not have: :meth:`to_dict` leaves them out.
    absent: frozenset[str] = field(default=frozenset(), kw_only=True, repr=False)

    @classmethod
    def typed_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "absent"))

    @classmethod
    def split(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """``extra`` and ``absent`` of ``data`` for this record's constructor."""
        keys = cls.typed_keys()
        return {"extra": {key: value for key, value in data.items() if key not in keys},
                "absent": frozenset(key for key in keys if key not in data)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, **{key: encoded(getattr(self, key)) for key in self.typed_keys() if key not in self.absent}}


@dataclass(frozen=True)
class TensorSpec(Record):
    """One input or output of the contract; ``"N"`` (or any string) in ``shape`` is a dynamic dimension."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, entry: Any, path: Path | str, where: str) -> TensorSpec:
        """The tensor ``where`` (e.g. ``inputs[0]``) of the contract of ``path``, its fields checked: a name, a
        shape of positive integers and dimension names, a supported dtype; else one line naming the field."""
        if not isinstance(entry, dict):
            raise RuntimeModelError(f"{path}: contract {where} must be an object, got {shown(entry)}")
        name, shape, dtype = entry.get("name"), entry.get("shape"), entry.get("dtype", "float32")
        if not isinstance(name, str) or not name:
            raise RuntimeModelError(f"{path}: contract {where} 'name' must be a non-empty string, got {shown(name)}")
        if not isinstance(shape, list) or not shape or not all(
                (type(d) is int and d > 0) or (isinstance(d, str) and d) for d in shape):
            raise RuntimeModelError(f"{path}: contract {where} ({name!r}) 'shape' must be a list of positive integers "
                                    f"and dimension names, got {shown(shape)}")
        if dtype not in DTYPES:
            raise RuntimeModelError(f"{path}: contract {where} ({name!r}) 'dtype' is {shown(dtype)}, expected one of "
                                    f"{list(DTYPES)}")
        return cls(name, tuple(shape), dtype, **cls.split(entry))

    def fits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            (isinstance(want, str) and got >= 1) or got == want for got, want in zip(shape, self.shape)
        )

    def describe(self) -> str:
        return "(" + ", ".join(map(str, self.shape)) + ")"

    def check(self, array: np.ndarray) -> None:
        """Raise :class:`RuntimeModelError` unless ``array`` has this dtype and shape and is finite."""
        if not isinstance(array, np.ndarray):
            raise RuntimeModelError(f"input {self.name!r} must be a numpy array, got {type(array).__name__}")
        if array.dtype != np.dtype(self.dtype):
            raise RuntimeModelError(f"input {self.name!r} has dtype {array.dtype}, expected {self.dtype}")
        if not self.fits(array.shape):
            raise RuntimeModelError(f"input {self.name!r} has shape {tuple(array.shape)}, expected {self.describe()}")
        if not np.isfinite(array).all():
            raise RuntimeModelError(f"input {self.name!r} contains NaN or infinity")


@dataclass(frozen=True)
class ModelInfo(Record):
    """``model``: the role (``student``, ``kd_student``, ``teacher``, ``user``, ...), a user's ``MODULE:CLASS``
    (``source``) and the architecture ``config``."""

    role: str = "unknown"
    source: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, entry: Any, path: Path | str) -> ModelInfo:
        if entry is None:
            return cls(absent=frozenset(cls.typed_keys()))
        if not isinstance(entry, dict):
            raise RuntimeModelError(f"{path}: contract 'model' must be an object, got {shown(entry)}")
        role, source, config = entry.get("role", "unknown"), entry.get("source"), entry.get("config", {})
        for key, value, expected in (("role", role, str), ("source", source, (str, type(None))),
                                     ("config", config, dict)):
            if not isinstance(value, expected):
                kind = {"role": "a string", "source": "a string or null", "config": "an object"}[key]
                raise RuntimeModelError(f"{path}: contract 'model.{key}' must be {kind}, got {shown(value)}")
        return cls(role, source, config, **cls.split(entry))

    @property
    def width(self) -> int:
        """The channels of the model's feature maps (``config.channels``; :data:`DEFAULT_WIDTH` if not stated)."""
        channels = self.config.get("channels")
        return channels if type(channels) is int and channels > 0 else DEFAULT_WIDTH


@dataclass(frozen=True)
class Precision(Record):
    """``precision``: the precision the export validated (``name``), the ``engine`` and the ``inference_precision``
    hint that run it as validated. Values a newer kdc may add are kept but read as the defaults (f32)."""

    name: str = "f32"
    engine: str | None = None
    inference_precision: str = "f32"

    @classmethod
    def from_dict(cls, entry: Any) -> Precision | None:
        """None for a contract without one (files from before it was recorded: f32) or with a malformed one."""
        if not isinstance(entry, dict):
            return None
        name, engine, hint = entry.get("name"), entry.get("engine"), entry.get("inference_precision")
        return cls(name if isinstance(name, str) else "f32", engine if isinstance(engine, str) else None,
                   hint if isinstance(hint, str) else "f32", **cls.split(entry))

    def validated(self) -> tuple[str | None, str]:
        """``(engine, precision hint)`` as :func:`kdc.runtime.load` uses them: ``("openvino", "bf16")`` for a bf16
        export; an engine or hint kdc does not know reads as None and f32."""
        return (self.engine if self.engine in ENGINES else None,
                self.inference_precision if self.inference_precision in PRECISIONS else "f32")


@dataclass(frozen=True)
class Contract(Record):
    """The contract of one artefact, typed where kdc reads it (see the module docstring)."""

    #: ``recon``, ``recon_complex``, ``recon_multicoil``, ``recon_image`` or ``sr`` (:mod:`kdc.tasks`); absent in
    #: files from before tasks had names, which are ``recon``.
    task: str
    #: ``[H, W]`` of the graph's images.
    image_size: tuple[int, int]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    contract_version: int = 0
    #: ``real part``, ``complex`` or ``magnitude``.
    output_kind: str = RECON.output_kind
    #: The acceleration the model was trained at; None where unknown or the task has no mask.
    acceleration: float | None = None
    #: Sampled column (row) indices of a baked 1-D mask, else None.
    mask_columns: tuple[int, ...] | None = None
    mask_rows: tuple[int, ...] | None = None
    #: Upscaling factor of a super-resolution model.
    scale: int | None = None
    dc_lowering: str = "none"
    model: ModelInfo = field(default_factory=ModelInfo)
    #: ``parity.max_abs_error``: the parity gate's worst absolute error against PyTorch (the rest in ``extra``).
    parity: Mapping[str, Any] = field(default_factory=dict)
    quantization: Mapping[str, Any] | None = None
    precision: Precision | None = None

    @classmethod
    def from_dict(cls, data: Any, path: Path | str) -> Contract:
        """The contract object ``data`` of the file ``path``, every field kdc reads checked; else one line naming
        the file and the field."""
        if not isinstance(data, dict):
            raise RuntimeModelError(f"{path}: kdc contract is not a JSON object")
        inputs, outputs = (tensors(data.get(key), path, key) for key in ("inputs", "outputs"))
        size = data.get("image_size")
        if not (isinstance(size, list) and len(size) == 2 and all(type(d) is int and d > 0 for d in size)):
            raise RuntimeModelError(f"{path}: contract 'image_size' must be two positive integers [H, W], got "
                                    f"{shown(size)}")
        task = data.get("task", RECON.name)
        if not isinstance(task, str):
            raise RuntimeModelError(f"{path}: contract 'task' must be a string, got {shown(task)}")
        try:
            get_task(task)
        except KdcError as err:
            raise RuntimeModelError(f"{path}: contract {err}; a newer kdc may have written it") from None
        version = data.get("contract_version", 0)
        if type(version) is not int or version < 0:
            raise RuntimeModelError(f"{path}: contract 'contract_version' must be a non-negative integer, got "
                                    f"{shown(version)}")
        acceleration = data.get("acceleration")
        if acceleration is not None and not (is_number(acceleration) and acceleration > 0):
            raise RuntimeModelError(f"{path}: contract 'acceleration' must be a positive number or null, got "
                                    f"{shown(acceleration)}")
        scale = data.get("scale")
        if scale is not None and not (type(scale) is int and scale > 0):
            raise RuntimeModelError(f"{path}: contract 'scale' must be a positive integer or null, got {shown(scale)}")
        lines = {key: line_indices(data.get(key), path, key, length) for key, length in
                 (("mask_rows", size[0]), ("mask_columns", size[1]))}
        spec = get_task(task)
        if (spec.takes_kspace and spec.kspace_layout == "channels" and "mask" not in [t.name for t in inputs]
                and lines["mask_rows"] is None and lines["mask_columns"] is None):
            raise RuntimeModelError(f"{path}: contract has no 'mask' input and no baked 'mask_columns' or "
                                    "'mask_rows'")
        texts = {key: data.get(key, default) for key, default in (("output_kind", RECON.output_kind),
                                                                   ("dc_lowering", "none"))}
        for key, value in texts.items():
            if not isinstance(value, str):
                raise RuntimeModelError(f"{path}: contract {key!r} must be a string, got {shown(value)}")
        parity, quantization = data.get("parity", {}), data.get("quantization")
        if not isinstance(parity, dict) or not is_number(parity.get("max_abs_error", 0.0)):
            raise RuntimeModelError(f"{path}: contract 'parity' must be an object with a number max_abs_error, got "
                                    f"{shown(parity)}")
        if quantization is not None and not (isinstance(quantization, dict)
                                             and isinstance(quantization.get("mode"), str)):
            raise RuntimeModelError(f"{path}: contract 'quantization' must be null or an object with a string mode, "
                                    f"got {shown(quantization)}")
        if not isinstance(data.get("precision"), (dict, type(None))):
            raise RuntimeModelError(f"{path}: contract 'precision' must be null or an object, got "
                                    f"{shown(data['precision'])}")
        return cls(task, (size[0], size[1]), inputs, outputs, version, texts["output_kind"], acceleration,
                   lines["mask_columns"], lines["mask_rows"], scale, texts["dc_lowering"],
                   ModelInfo.from_dict(data.get("model"), path), parity, quantization,
                   Precision.from_dict(data.get("precision")), **cls.split(data))

    @property
    def task_spec(self) -> TaskSpec:
        return get_task(self.task)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def parity_max_abs_error(self) -> float:
        return float(self.parity.get("max_abs_error", 0.0))

    @property
    def quantization_mode(self) -> str:
        """``int8`` or ``fp16`` for a quantized graph, else ``none``."""
        return self.quantization["mode"] if self.quantization else "none"

    @property
    def precision_name(self) -> str:
        return self.precision.name if self.precision else "f32"

    def validated_precision(self) -> tuple[str | None, str]:
        """``(engine, precision hint)`` the file's export validated (``kdc export --precision``): ``("openvino",
        "bf16")`` for a bf16 export; ``(None, "f32")`` for files from before it was recorded. Every float graph is
        also validated at f32 (its parity gate)."""
        return self.precision.validated() if self.precision else (None, "f32")


def tensors(entries: Any, path: Path | str, key: str) -> tuple[TensorSpec, ...]:
    """The contract's ``inputs`` or ``outputs`` (``key``), each checked by :meth:`TensorSpec.from_dict`."""
    if not isinstance(entries, list) or not entries:
        raise RuntimeModelError(f"{path}: contract {key!r} must be a non-empty list of tensors, got {shown(entries)}")
    return tuple(TensorSpec.from_dict(entry, path, f"{key}[{index}]") for index, entry in enumerate(entries))


def line_indices(value: Any, path: Path | str, key: str, length: int) -> tuple[int, ...] | None:
    """``mask_columns`` or ``mask_rows``: null, or distinct indices below the image's ``length``."""
    if value is None:
        return None
    if not (isinstance(value, list) and value and all(type(i) is int and 0 <= i < length for i in value)
            and len(set(value)) == len(value)):
        raise RuntimeModelError(f"{path}: contract {key!r} must be null or distinct indices in [0, {length}), got "
                                f"{shown(value)}")
    return tuple(value)
