"""What an export returns and raises (standard library only, so the CLI starts without torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdc.errors import KdcError

if TYPE_CHECKING:
    from kdc.runtime.contract import Contract


class ExportError(KdcError):
    """An export that cannot be made: bad source, format, lowering, size or mask, or a failed parity gate."""


@dataclass(frozen=True)
class ExportReport:
    """One written artefact: where it is, how it was lowered and how close it is to the PyTorch model."""

    path: Path
    format: str
    dc: str
    file_size: int
    parity_error: float
    #: The contract written into the file.
    contract: Contract = field(repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        """The contract as the JSON object the file holds."""
        return self.contract.to_dict()
