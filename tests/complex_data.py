"""Complex images for the tests until ``kdc data build --complex`` exists: real slices with a smooth random phase.

:class:`PhasedSlices` is a :class:`kdc.data.slices.SliceDataset` whose targets are ``(2, H, W)`` (real, imaginary)
complex images ``|x| exp(i phi)`` and whose k-space is simulated from them. :data:`PHASED_KDC` is the ``python -c``
program of a ``kdc`` command that reads every split that way (data injected where the reader sits, nothing of the
models, recipe, export or runtime replaced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdc.data.slices import SliceDataset, open_split, split_volumes
from kdc.mri.fft import fft2
from kdc.mri.simulate import smooth_phase


class PhasedSlices(SliceDataset):
    """Slices of a split as complex images (smooth phase seeded by volume and slice)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        volume, slice_index = self._index[index]
        image = item["target"][0] * smooth_phase(self.image_shape, seed=1000 * volume + slice_index)
        kspace = fft2(image) * self.mask
        return {**item, "kspace": np.stack([kspace.real, kspace.imag]).astype(np.float32),
                "target": np.stack([image.real, image.imag]).astype(np.float32)}


def open_phased_split(data: str | Path, split: str, acceleration: int, mask_kind: str = "random",
                      mask_seed: int = 0) -> PhasedSlices:
    """:func:`kdc.data.slices.open_split` with complex images."""
    plain = open_split(data, split, acceleration, mask_kind, mask_seed)
    return PhasedSlices(split_volumes(data, split), acceleration, plain.mask)


PHASED_KDC = """
import kdc.compress.tasks
from tests.complex_data import open_phased_split
kdc.compress.tasks.open_split = open_phased_split
from kdc.cli import app
app(prog_name="kdc")
"""
