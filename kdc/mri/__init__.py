"""The MRI rules every stage shares, numpy only: FFT conventions, undersampling masks.

``kdc.data`` (training data), ``kdc.export`` (graphs) and ``kdc.runtime`` (scanner-side inference, no torch) all
import these modules, so that a convention is written once.
"""
