"""kdc: distil MRI reconstruction networks (KD-MRI) and ship them without PyTorch."""

__version__ = "0.1.0"
