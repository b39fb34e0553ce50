"""Models: DC-CNN (KD-MRI teacher and student), VDSR, data-consistency layers and the checkpoint format."""

from kdc.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from kdc.models.dc import DataConsistency
from kdc.models.dccnn import DCCNN

__all__ = ["DCCNN", "DataConsistency", "build_model", "load_checkpoint", "save_checkpoint"]
