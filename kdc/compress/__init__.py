"""Compression: KD losses, the training loop and the KD-MRI recipe (teacher, student, AT pre-training, KD)."""
