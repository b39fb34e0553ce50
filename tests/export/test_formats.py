import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from kdc.mri.masks import cartesian_mask
from kdc.export import export_model

from .helpers import column_mask, undersampled

# Loads an artefact with kdc made unimportable, runs it on saved inputs and prints its contract's lowering.
RELOAD = textwrap.dedent("""
    import json, sys
    sys.modules["kdc"] = None  # any import of kdc now fails
    import torch
    path, fmt, inputs = sys.argv[1:4]
    feeds = torch.load(inputs)
    if fmt == "torchscript":
        extra = {"kdc_contract.json": ""}
        module = torch.jit.load(path, _extra_files=extra)
    else:
        extra = {"kdc_contract.json": ""}
        module = torch.export.load(path, extra_files=extra).module()
    torch.save(module(*feeds).detach(), inputs + ".out")
    print(json.loads(extra["kdc_contract.json"])["dc_lowering"])
""")


@pytest.mark.parametrize("fmt, suffix", [("torchscript", ".pt"), ("pt2", ".pt2")])
@pytest.mark.parametrize("bake", [False, True], ids=["mask-input", "baked"])
def test_torch_artefact_reloads_in_a_fresh_process_without_kdc(model, tmp_path, fmt, suffix, bake):
    size = (48, 40)
    mask = cartesian_mask("random", 4, size)
    report = export_model(model, tmp_path / f"m{suffix}", fmt=fmt, mask=mask, bake_mask=bake)
    kspace, mask_input = undersampled(size, mask, count=3), column_mask(mask)
    feeds = [kspace] if bake else [kspace, mask_input]
    inputs = tmp_path / "inputs.pt"
    torch.save(feeds, inputs)
    done = subprocess.run([sys.executable, "-c", RELOAD, str(report.path), fmt, str(inputs)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "masked"
    with torch.no_grad():
        expected = model(kspace, mask_input)
    assert (torch.load(f"{inputs}.out") - expected).abs().max() < 1e-5
    assert json.loads(json.dumps(report.metadata))["format"] == fmt


def test_auto_uses_torch_fft_for_a_2d_mask_in_torchscript(model, tmp_path):
    mask = (np.random.default_rng(0).random((48, 40)) < 0.4).astype(np.float32)
    report = export_model(model, tmp_path / "m.pt", fmt="torchscript", mask=mask)
    assert report.dc == "dft" and report.metadata["inputs"][1]["shape"] == [1, 1, 48, 40]
    assert report.parity_error < 1e-6
