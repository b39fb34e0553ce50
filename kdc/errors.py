"""The one exception type for user mistakes; the CLI prints it as a one-line error (standard library only)."""


class KdcError(ValueError):
    """Bad input from the user: a missing file, a wrong key, a shape that does not fit. Never a bug."""


class ListedWarning(UserWarning):
    """A warning the API also lists (e.g. ``Reconstructor.warnings``) and the CLI prints as its own line: the CLI
    silences the Python warning so that the line is not shown twice."""
