"""``kdc export``: trained models as self-contained ONNX, OpenVINO IR, TorchScript or ``.pt2`` artefacts.

``export_model`` and ``LOWERINGS`` import torch; they load on first use so that ``kdc.export.cli`` starts fast.
"""

from __future__ import annotations

from typing import Any

from kdc.export.report import ExportError, ExportReport

__all__ = ["LOWERINGS", "ExportError", "ExportReport", "export_model"]


def __getattr__(name: str) -> Any:
    if name == "export_model":
        from kdc.export.api import export_model

        return export_model
    if name == "LOWERINGS":
        from kdc.export.lowerings import LOWERINGS

        return LOWERINGS
    raise AttributeError(f"module 'kdc.export' has no attribute {name!r}")
