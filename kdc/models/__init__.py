"""Models: DC-CNN (KD-MRI teacher and student), VDSR, data-consistency layers and the checkpoint format."""

from kdc.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from kdc.models.dc import DataConsistency
from kdc.models.dccnn import DCCNN
from kdc.models.vdsr import VDSR

__all__ = ["DCCNN", "VDSR", "DataConsistency", "build_model", "load_checkpoint", "save_checkpoint"]
