"""Data: FFT conventions, undersampling masks, h5 formats, metrics and the demo set."""
