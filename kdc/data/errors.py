"""The error every data reader raises for bad input (standard library only)."""

from kdc.errors import KdcError


class DataError(KdcError):
    """Data that cannot be used: a missing file, a missing h5 key, a wrong shape, NaN, an unknown acceleration."""
