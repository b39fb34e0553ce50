"""Run exported kdc models without PyTorch: numpy, onnxruntime and OpenVINO only.

``load(path)`` gives a :class:`Reconstructor`; ``kspace_channels`` and ``mask_columns`` turn scanner arrays into its
inputs. ``kdc bench``, ``kdc serve`` and ``kdc triton-repo`` live in :mod:`kdc.runtime.cli`. Nothing here imports
torch (the ``torch`` runtime of ``kdc bench`` lives in :mod:`kdc.export.eager` and is loaded only when asked for).
"""

from kdc.runtime.contract import Contract, TensorSpec
from kdc.runtime.session import PhaseWarning, PrecisionWarning, Reconstructor, load
from kdc.runtime.tensors import RuntimeModelError, kspace_channels, mask_columns

__all__ = ["Contract", "PhaseWarning", "PrecisionWarning", "Reconstructor", "RuntimeModelError", "TensorSpec", "kspace_channels",
           "load", "mask_columns"]
