import dataclasses
import json

import numpy as np
import pytest
import torch

from kdc.compress.precision import autocast, cpu_has_native_bf16, prepare_model, resolve_precision
from kdc.compress.recipe import Run, RunConfig, train
from kdc.compress.trainer import read_history
from kdc.errors import KdcError
from kdc.mri.masks import cartesian_mask
from kdc.models import DCCNN, load_checkpoint
from tests.conftest import make_phantom


def test_cpu_flags_decide_native_bf16(tmp_path):
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    avx = tmp_path / "avx"
    avx.write_text("flags\t\t: fpu avx512f avx512_bf16\n")
    plain = tmp_path / "plain"
    plain.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_native_bf16(amx) and cpu_has_native_bf16(avx)
    assert not cpu_has_native_bf16(plain)
    assert not cpu_has_native_bf16(tmp_path / "missing")


def test_auto_resolves_by_hardware_and_bad_names_are_refused():
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(KdcError, match="--precision 'fp16': expected one of"):
        resolve_precision("fp16", "cpu")


def test_bf16_convolutions_keep_data_consistency_exact_in_float32():
    """Under bf16 autocast every DC layer gets and gives float32, and the complex DC-CNN's output holds the measured
    k-space on the sampled lines to float32 accuracy: FFTs and DC do not run in bfloat16."""
    torch.manual_seed(0)
    model = prepare_model(DCCNN(cascades=2, convs=3, channels=8, image_channels=2), "bf16")
    dtypes = []
    model.dc.register_forward_hook(lambda _, inputs, output: dtypes.append((inputs[0].dtype, output.dtype)))
    image = torch.rand(2, 1, 32, 32) * torch.exp(1j * torch.rand(2, 1, 32, 32))
    mask = torch.from_numpy(cartesian_mask("random", 4, (32, 32))[:1][None].astype(np.float32))
    measured = torch.fft.fft2(image.to(torch.complex64), norm="ortho") * mask
    with autocast("bf16", "cpu"):
        output, features = model.forward_features(torch.cat([measured.real, measured.imag], dim=1), mask)
    assert features[0][0].dtype == torch.bfloat16  # the convolutions did run in bfloat16
    assert dtypes == [(torch.float32, torch.float32)] * 2 and output.dtype == torch.float32
    produced = torch.fft.fft2(torch.complex(output[:, :1], output[:, 1:]), norm="ortho")
    error = ((produced - measured) * mask).abs().max() / measured.abs().max()
    assert error < 1e-5  # a bfloat16 DC would leave errors near 1e-2


def test_bf16_run_records_its_precision_writes_float32_checkpoints_and_refuses_another_on_resume(
        tmp_path, write_kdmri):
    data = tmp_path / "data"
    write_kdmri(data / "train" / "a.h5", make_phantom(4, 16, 16, seed=0))
    write_kdmri(data / "val" / "b.h5", make_phantom(2, 16, 16, seed=1))
    out = tmp_path / "run"
    train(RunConfig(str(data), str(out), epochs=2, precision="bf16"), "student")

    assert json.loads((out / "run.json").read_text())["precision"] == "bf16"
    epochs = read_history(out)
    assert [(e["stage"], e["epoch"], e["precision"]) for e in epochs] == [("student", 1, "bf16"),
                                                                       ("student", 2, "bf16")]
    for epoch in epochs:
        assert epoch["step_seconds"] + epoch["data_seconds"] + epoch["validation_seconds"] <= epoch["seconds"] * 1.01
        assert np.isfinite(epoch["val_psnr"]) and epoch["steps"] == 1
    model, meta = load_checkpoint(out / "student.pt")
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.state_dict().values())
    assert meta["epochs"] >= 1

    with pytest.raises(KdcError, match=r"--resume with different settings \(precision\)"):
        Run(RunConfig(str(data), str(out), epochs=2, precision="fp32"), resume=True)
    resumed = RunConfig(str(data), str(out), epochs=2, precision="bf16")
    with Run(resumed, resume=True) as run:
        assert dataclasses.asdict(run.config)["precision"] == "bf16"
