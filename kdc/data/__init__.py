"""Data: FFT conventions, undersampling masks, h5 formats, slice datasets, metrics and the demo set.

Import the modules themselves (``kdc.data.slices``, ``kdc.data.metrics``, ...): this package only re-exports
:class:`DataError`, so that the numpy-only modules stay importable without h5py.
"""

from kdc.data.errors import DataError

__all__ = ["DataError"]
