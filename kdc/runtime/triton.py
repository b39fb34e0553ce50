"""A Triton Inference Server model repository for an exported ONNX model, on the runtime its contract validated.

Layout: ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (or ``model.xml`` + ``model.bin``). A file
exported with ``--precision bf16`` (its contract's ``precision`` names OpenVINO at bf16) gets Triton's OpenVINO
backend with ``HINT_BF16``: an ONNX file read directly, or the OpenVINO IR, whose data consistency stays at f32;
every other ONNX file the onnxruntime backend at f32, as ``kdc.runtime.load`` runs them. Any other IR is refused:
the OpenVINO backend has no setting that holds a CPU with bf16 at f32. With the mask baked in, k-space is the only
input and its batch dimension is dynamic, so Triton batches requests (``max_batch_size``, dynamic batching). With
a mask input, the mask has no batch dimension: the config then has ``max_batch_size: 0`` and full shapes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from kdc._io import atomic_directory
from kdc.runtime.session import Reconstructor, load
from kdc.runtime.tensors import RuntimeModelError

#: Fields whose values are protobuf enums (written unquoted).
ENUM_FIELDS = {"data_type", "kind"}
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU")


def triton_config(model: Reconstructor, name: str, *, max_batch_size: int = 8, instances: int = 1,
                  kind: str = "KIND_CPU", threads: int | None = None) -> dict[str, Any]:
    """Triton's ``ModelConfig`` for ``model`` in its JSON form (as Triton's ``/config`` endpoint returns it)."""
    if kind not in INSTANCE_KINDS:
        raise RuntimeModelError(f"unknown instance kind {kind!r}: expected one of {list(INSTANCE_KINDS)}")
    if instances < 1 or max_batch_size < 0:
        raise RuntimeModelError("instances must be >= 1 and max_batch_size >= 0")
    specs = [*model.inputs, *model.outputs]
    batched = max_batch_size > 0 and all(isinstance(spec.shape[0], str) for spec in specs)

    def tensor(spec: Any) -> dict[str, Any]:
        dims = spec.shape[1:] if batched else spec.shape
        return {"name": spec.name, "data_type": "TYPE_FP32", "dims": [-1 if isinstance(d, str) else d for d in dims]}

    on_openvino = model.contract.validated_precision() == ("openvino", "bf16")
    runtime = ({"backend": "openvino", "default_model_filename": f"model{model.path.suffix}"} if on_openvino
               else {"platform": "onnxruntime_onnx", "backend": "onnxruntime"})
    config: dict[str, Any] = {
        "name": name,
        **runtime,
        "max_batch_size": max_batch_size if batched else 0,
        "input": [tensor(spec) for spec in model.inputs],
        "output": [tensor(spec) for spec in model.outputs],
        "instance_group": [{"count": instances, "kind": kind}],
    }
    if batched:
        config["dynamic_batching"] = {}
    parameters = {}
    if on_openvino:
        parameters["HINT_BF16"] = {"string_value": "YES"}
        if threads:
            parameters["INFERENCE_NUM_THREADS"] = {"string_value": str(threads)}
    elif threads:
        parameters = {"intra_op_thread_count": {"string_value": str(threads)},
                      "inter_op_thread_count": {"string_value": "1"}}
    if parameters:
        config["parameters"] = parameters
    return config


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and key not in ENUM_FIELDS:
        return json.dumps(value)
    return str(value)


def _fields(config: dict[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for key, value in config.items():
        if key == "parameters":  # map<string, ModelParameter>: one key/value block per entry
            value = [{"key": k, "value": v} for k, v in value.items()]
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", *_fields(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines += [f"{pad}{key} {{", *_fields(item, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(key, value)}")
    return lines


def render_pbtxt(config: dict[str, Any]) -> str:
    """``config`` in protobuf text format, as ``config.pbtxt`` holds it."""
    return "\n".join(_fields(config, 0)) + "\n"


def write_triton_repo(model_path: str | os.PathLike[str], repo: str | os.PathLike[str], *, name: str | None = None,
                      max_batch_size: int = 8, instances: int = 1, kind: str = "KIND_CPU",
                      threads: int | None = None, overwrite: bool = False) -> Path:
    """Write ``repo/name/{config.pbtxt, 1/model.onnx}`` from an exported ``.onnx`` (``1/model.xml`` and ``.bin``
    from a bf16 OpenVINO IR); return the model directory.

    The model directory appears whole or not at all; an existing one is replaced only with ``overwrite``,
    and only if kdc wrote it (:func:`kdc._io.atomic_directory`).
    """
    model_path = Path(model_path)
    if model_path.suffix not in (".onnx", ".xml"):
        raise RuntimeModelError(f"{model_path}: a Triton repository needs an exported .onnx model (or a bf16 .xml)")
    model = load(model_path)
    if model_path.suffix == ".xml" and model.contract.validated_precision() != ("openvino", "bf16"):
        raise RuntimeModelError(f"{model_path}: Triton's OpenVINO backend cannot hold this IR at its validated f32 "
                                "(it runs bf16 on CPUs that have it): give the .onnx export, or an IR exported "
                                "with --precision bf16")
    name = name or model_path.stem
    target = Path(repo) / name
    if target.exists() and not overwrite:
        raise RuntimeModelError(f"{target} already exists (pass overwrite / --overwrite to replace it)")
    config = render_pbtxt(triton_config(model, name, max_batch_size=max_batch_size, instances=instances, kind=kind,
                                        threads=threads))
    reads = [model_path, model_path.with_suffix(".bin")] if model_path.suffix == ".xml" else [model_path]
    with atomic_directory(target, overwrite=overwrite, reads=reads) as staged:
        (staged / "1").mkdir()
        shutil.copyfile(model_path, staged / "1" / f"model{model_path.suffix}")
        if model_path.suffix == ".xml":
            shutil.copyfile(model_path.with_suffix(".bin"), staged / "1" / "model.bin")
        (staged / "config.pbtxt").write_text(config)
    return target
