"""The KServe v2 / Open Inference Protocol REST messages, as Triton and OpenVINO Model Server speak them.

Requests carry JSON tensors (``data`` flat or nested, row-major) or, with the binary tensor data extension, a JSON
header of ``Inference-Header-Content-Length`` bytes followed by raw little-endian tensors. Everything a client can
get wrong raises :class:`ProtocolError` with the HTTP status to answer; the web framework lives in ``server.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdc import __version__
from kdc.runtime.contract import TensorSpec
from kdc.runtime.session import Reconstructor
from kdc.runtime.tensors import RuntimeModelError

HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL_VERSION = "1"
#: KServe datatype of each numpy dtype a kdc model uses.
DATATYPES = {np.dtype(np.float32): "FP32"}
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}
SERVER_METADATA = {"name": "kdc", "version": __version__, "extensions": ["binary_tensor_data"]}


class ProtocolError(RuntimeModelError):
    """A request the server refuses; ``status`` is the HTTP status of the answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    """A decoded, validated request: the model's feeds and the outputs to return (binary or JSON)."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: list[str]
    binary: set[str]
    #: The request's ``parameters.normalise``; None: the server's default.
    normalise: bool | None = None


def parse_length(text: str) -> int | None:
    """A byte count written in ASCII digits, else None (``str.isdigit`` also accepts digits that ``int`` refuses)."""
    return int(text) if text.isascii() and text.isdigit() else None


def datatype(dtype: str) -> str:
    return DATATYPES[np.dtype(dtype)]


def model_metadata(name: str, model: Reconstructor) -> dict[str, Any]:
    """The model metadata response, plus the kdc contract under ``kdc_contract``."""

    def tensors(specs: list[Any]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": datatype(s.dtype), "shape": [-1 if isinstance(d, str) else d for d in s.shape]}
                for s in specs]

    return {"name": name, "versions": [MODEL_VERSION], "platform": PLATFORMS[model.engine],
            "inputs": tensors(model.inputs), "outputs": tensors(model.outputs), "kdc_contract": model.contract.to_dict()}


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _shape(entry: dict[str, Any], name: str) -> list[int]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return shape


def _tensor(entry: dict[str, Any], name: str, shape: list[int], binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """The input's array, read from ``data`` or from ``binary`` at ``offset``; return it and the new offset."""
    count = math.prod(shape)
    parameters = _object(entry.get("parameters") or {}, f"input {name!r} 'parameters'")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * 4:
            raise ProtocolError(f"input {name!r}: binary_data_size {size!r} does not fit shape {shape} of FP32 "
                                f"({count * 4} bytes)")
        if offset + size > len(binary):
            raise ProtocolError(f"input {name!r}: binary data ends after {len(binary) - offset} of {size} bytes")
        # A view of the request body, not a copy: inputs are only read.
        return np.frombuffer(binary[offset:offset + size], dtype="<f4").reshape(shape), offset + size
    data = entry.get("data")
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r}: 'data' must be a list of numbers (or use binary_data_size)")
    try:
        values = np.asarray(data)
    except (ValueError, RecursionError):
        raise ProtocolError(f"input {name!r}: 'data' is ragged or nested deeper than the shape") from None
    if values.dtype.kind not in "iuf" or values.dtype == object:
        raise ProtocolError(f"input {name!r}: 'data' must hold only numbers")
    if values.size != count:
        raise ProtocolError(f"input {name!r}: 'data' has {values.size} values, shape {shape} needs {count}")
    with np.errstate(over="ignore"):
        return values.astype(np.float32).reshape(shape), offset


def _check_batch(name: str, shape: list[int], spec: TensorSpec, max_batch: int) -> None:
    """413 for a batch above ``max_batch``, before the tensor's data is read."""
    if spec.shape and isinstance(spec.shape[0], str) and shape and shape[0] > max_batch:
        raise ProtocolError(f"input {name!r}: batch of {shape[0]} exceeds this server's limit of {max_batch} slices "
                            "per request (--max-batch): split the request", 413)


def json_values_bound(body: bytes | bytearray, end: int) -> int:
    """An upper bound of the values in the JSON text ``body[:end]``, counted without parsing it: an array or
    object of k > 0 members has k - 1 commas, so values <= 1 + commas + opening brackets."""
    return 1 + sum(body.count(token, 0, end) for token in (b",", b"[", b"{"))


def decode_request(body: bytes | bytearray, header_length: str | None, model: Reconstructor,
                   max_batch: int | None = None, max_values: int | None = None) -> InferRequest:
    """Parse and validate an infer request body against ``model``'s contract (batches up to ``max_batch``, JSON
    of at most ``max_values`` values, refused with 413 before it is parsed)."""
    view = memoryview(body)
    split = len(body)
    if header_length is not None:
        length = parse_length(header_length)
        if length is None or length > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {header_length!r} is not a length within the body "
                                f"({len(body)} bytes)")
        split = length
    if max_values is not None and (values := json_values_bound(body, split)) > max_values:
        raise ProtocolError(f"request JSON holds up to {values} values, above this server's limit of {max_values} "
                            "(--max-json-values): send large tensors with the binary tensor data extension", 413)
    try:  # json.loads reads bytes and bytearray: the body itself, or a copy of the binary request's header
        payload = _object(json.loads(body if split == len(body) else bytes(view[:split])), "request")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ProtocolError(f"malformed JSON: {err}") from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    entries = payload.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise ProtocolError("request must have a non-empty 'inputs' list")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for entry in entries:
        entry = _object(entry, "each of 'inputs'")
        name = entry.get("name")
        if name not in model.input_names:
            raise ProtocolError(f"unknown input {name!r}: the model takes {model.input_names}")
        if name in feeds:
            raise ProtocolError(f"input {name!r} given twice")
        spec = model.inputs[model.input_names.index(name)]
        expected = datatype(spec.dtype)
        if entry.get("datatype") != expected:
            raise ProtocolError(f"input {name!r}: datatype {entry.get('datatype')!r} is not supported, expected {expected}")
        shape = _shape(entry, name)
        if max_batch is not None:
            _check_batch(name, shape, spec, max_batch)
        feeds[name], offset = _tensor(entry, name, shape, view[split:], offset)
    if offset != len(body) - split:
        raise ProtocolError(f"{len(body) - split - offset} bytes of binary data belong to no input")
    try:
        model.check(feeds)
    except RuntimeModelError as err:
        raise ProtocolError(str(err)) from None
    parameters = _object(payload.get("parameters") or {}, "'parameters'")
    default_binary = bool(parameters.get("binary_data_output", False))
    normalise = parameters.get("normalise")
    if normalise is not None and not isinstance(normalise, bool):
        raise ProtocolError(f"parameter 'normalise' must be true or false, got {normalise!r}")
    requested = payload.get("outputs") or [{"name": name} for name in model.output_names]
    outputs, binary = [], set()
    for entry in requested if isinstance(requested, list) else [None]:
        entry = _object(entry, "each of 'outputs'")
        if entry.get("name") not in model.output_names:
            raise ProtocolError(f"unknown output {entry.get('name')!r}: the model gives {model.output_names}")
        outputs.append(entry["name"])
        params = _object(entry.get("parameters") or {}, f"output {entry['name']!r} 'parameters'")
        if params.get("binary_data", default_binary):
            binary.add(entry["name"])
    request_id = payload.get("id")
    return InferRequest(None if request_id is None else str(request_id), feeds, outputs, binary, normalise)


def encode_response(name: str, request: InferRequest, results: dict[str, np.ndarray], notes: list[str] | None = None
                    ) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers; binary outputs follow the JSON header in request order. ``notes`` (the
    runtime's warnings, e.g. k-space with phase) go to ``parameters.kdc_warnings``."""
    outputs: list[dict[str, Any]] = []
    chunks: list[np.ndarray] = []
    for output in request.outputs:
        array = np.ascontiguousarray(results[output], dtype="<f4")
        tensor: dict[str, Any] = {"name": output, "datatype": "FP32", "shape": list(array.shape)}
        if output in request.binary:
            tensor["parameters"] = {"binary_data_size": array.nbytes}
            chunks.append(array)  # joined from the array's buffer: no intermediate copy
        else:
            tensor["data"] = array.ravel().tolist()
        outputs.append(tensor)
    response: dict[str, Any] = {"model_name": name, "model_version": MODEL_VERSION, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    if notes:
        response["parameters"] = {"kdc_warnings": "; ".join(notes)}
    header = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
