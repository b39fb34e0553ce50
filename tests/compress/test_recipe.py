"""Run settings: a run written before ``--lr-schedule`` existed resumes only with the constant lr it trained with."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kdc.compress.recipe import Run, RunConfig
from kdc.errors import KdcError
from tests.conftest import make_phantom


def test_run_from_before_lr_schedule_resumes_with_constant_only(tmp_path, write_kdmri):
    data = tmp_path / "data"
    write_kdmri(data / "train" / "a.h5", make_phantom(2, 16, 16, seed=0))
    write_kdmri(data / "val" / "b.h5", make_phantom(2, 16, 16, seed=1))
    out = tmp_path / "run"
    out.mkdir()
    old = dataclasses.asdict(RunConfig(str(data), str(out)))
    del old["lr_schedule"], old["precision"]
    (out / "run.json").write_text(json.dumps(old))

    with pytest.raises(KdcError, match="lr_schedule"):
        Run(RunConfig(str(data), str(out), precision="fp32"), resume=True)
    with pytest.raises(KdcError, match="precision"):  # a run from before --precision trained in float32
        Run(RunConfig(str(data), str(out), lr_schedule="constant", precision="bf16"), resume=True)
    with Run(RunConfig(str(data), str(out), lr_schedule="constant", precision="fp32"), resume=True) as run:
        assert run.config.lr_schedule == "constant"
    with pytest.raises(KdcError, match="--lr-schedule 'step'"):
        Run(RunConfig(str(data), str(tmp_path / "other"), lr_schedule="step"))
