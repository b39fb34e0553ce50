"""Models: DC-CNN (KD-MRI teacher and student), VDSR, the multi-coil SENSE models (VarNet-style, SENSE DC-CNN),
data-consistency layers and the checkpoint format."""

from kdc.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from kdc.models.dc import DataConsistency
from kdc.models.dccnn import DCCNN
from kdc.models.sense_dccnn import SenseDCCNN
from kdc.models.sense_varnet import SenseVarNet
from kdc.models.vdsr import VDSR

__all__ = ["DCCNN", "VDSR", "SenseDCCNN", "SenseVarNet", "DataConsistency", "build_model", "load_checkpoint",
           "save_checkpoint"]
