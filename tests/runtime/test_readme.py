"""The README's scanner snippet, executed as written on fastMRI-centred k-space at scanner scale."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

README = Path(__file__).parents[2] / "README.md"


def scanner_snippet() -> str:
    """The python block of the README that follows 'In a scanner program'."""
    text = README.read_text()
    match = re.search(r"In a scanner program.*?```python\n(.*?)```", text, re.S)
    assert match, "README has no scanner snippet"
    return match.group(1)


def test_readme_scanner_snippet_gives_the_upright_image(artefacts, tmp_path, monkeypatch):
    import kdc.runtime as rt
    from kdc.data.demo import validation_images
    from kdc.mri.fft import fft2, fft2c
    from kdc.mri.masks import cartesian_lines

    shutil.copy(artefacts.student_onnx, tmp_path / "student.onnx")
    monkeypatch.chdir(tmp_path)
    images = validation_images((40, 32), 3) * 5e3  # scanner scale, not [0, 1]
    centred_lines = cartesian_lines("random", 4, 32, seed=1)
    scope = {"kspace": fft2c(images) * centred_lines, "mask": np.broadcast_to(centred_lines, (40, 32))}
    exec(scanner_snippet(), scope)

    lines = np.fft.ifftshift(centred_lines)
    model = rt.load(artefacts.student_onnx)
    reference = model.reconstruct(rt.kspace_channels(fft2(images) * lines), lines, normalise=True)
    np.testing.assert_allclose(scope["image"], reference, atol=1e-5 * np.abs(reference).max())
