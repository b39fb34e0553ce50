"""ONNX clean-up shared by the ONNX and OpenVINO formats: duplicate initializers, metadata, full check."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import onnx
from onnx import numpy_helper

#: metadata_props key holding the contract as one JSON object.
CONTRACT_KEY = "kdc.contract"


def _fingerprint(tensor: onnx.TensorProto) -> tuple[int, tuple[int, ...], str]:
    data = numpy_helper.to_array(tensor)
    return tensor.data_type, tuple(tensor.dims), hashlib.sha256(data.tobytes()).hexdigest()


def _rename_inputs(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs]:
                _rename_inputs(sub, renames)


def remove_duplicate_initializers(model: onnx.ModelProto) -> int:
    """Keep one copy of each distinct initializer, re-point the nodes at it; return how many were removed."""
    graph = model.graph
    graph_io = {value.name for value in [*graph.input, *graph.output]}
    first: dict[tuple[int, tuple[int, ...], str], str] = {}
    renames: dict[str, str] = {}
    kept = []
    for tensor in graph.initializer:
        key = _fingerprint(tensor)
        if key in first and tensor.name not in graph_io:
            renames[tensor.name] = first[key]
        else:
            first.setdefault(key, tensor.name)
            kept.append(tensor)
    if renames:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        _rename_inputs(graph, renames)
    return len(renames)


def set_contract(model: onnx.ModelProto, contract: dict[str, Any], flat: dict[str, str]) -> None:
    """Write the contract JSON under :data:`CONTRACT_KEY` and ``flat`` as plain string keys."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({CONTRACT_KEY: json.dumps(contract, sort_keys=True), **flat})
    onnx.helper.set_model_props(model, props)


def read_contract(model: onnx.ModelProto) -> dict[str, Any]:
    """The contract of an exported file (``KeyError`` if it has none)."""
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props[CONTRACT_KEY])
