"""The torch-free task registry (kdc.tasks) that compress, export and runtime share."""

import subprocess
import sys

import numpy as np
import pytest

from kdc.errors import KdcError
from kdc.tasks import (
    COMPLEX_RECON, IMAGE_RECON, MULTICOIL_RECON, RECON, SUPER_RESOLUTION, TASKS, find_task, get_task, task_of_config,
)


def test_every_stage_registers_every_task():
    from kdc.compress.tasks import TASKS as TRAINING
    from kdc.export.architectures import architecture_of, registered
    from kdc.models import build_model

    from kdc.compress.architectures import architecture_of as training_family

    trainable = sorted(name for name, spec in TASKS.items() if spec.trainable)
    assert trainable == sorted(TRAINING) == ["recon", "recon_complex", "recon_image", "recon_multicoil", "sr"]
    assert all(TRAINING[name].spec is TASKS[name] for name in trainable)
    for preset in ("student", "complex_student", "sr_student", "multicoil_student", "multicoil_dccnn"):
        # every kdc model has a registered export, under the name of its training family
        model = build_model(preset)
        assert architecture_of(model).name in registered()
        assert training_family(model).name == architecture_of(model).name  # one family, one name, two halves
    # A user's model is exported through its registered architecture: fastMRI's VarNet and U-Net.
    assert {"fastmri_unet", "fastmri_varnet"} <= set(registered())


def test_options_and_model_configs_pick_the_task():
    assert find_task("recon") is RECON and find_task("recon", "complex") is COMPLEX_RECON
    assert find_task("sr") is SUPER_RESOLUTION
    assert task_of_config({"arch": "dccnn", "cascades": 5}) is RECON
    assert task_of_config({"arch": "dccnn", "image_channels": 2}) is COMPLEX_RECON
    assert task_of_config({"arch": "vdsr", "depth": 7}) is SUPER_RESOLUTION
    # A user's class takes the task its run or checkpoint records (none recorded: recon, as run.json has it).
    user = {"arch": "user", "class": "fastmri.models:Unet", "init": {}}
    assert task_of_config(user, "recon_image") is IMAGE_RECON
    assert task_of_config(user, "recon_multicoil") is MULTICOIL_RECON
    assert task_of_config(user) is RECON
    with pytest.raises(KdcError, match="unknown task 'denoise'"):
        task_of_config(user, "denoise")
    for arch in ("sense_varnet", "sense_dccnn"):  # kdc's SENSE models take the multi-coil task's inputs
        assert task_of_config({"arch": arch, "cascades": 3}) is TASKS["recon_multicoil"]
    with pytest.raises(KdcError, match="task 'sr' has magnitude images only"):
        find_task("sr", "complex")
    with pytest.raises(KdcError, match="unknown task 'denoise'"):
        find_task("denoise")
    assert find_task("multicoil") is TASKS["recon_multicoil"]  # kdc's SENSE VarNet, or a user's (fastMRI's VarNet)
    assert find_task("image") is IMAGE_RECON  # a user's class on the zero-filled image (fastMRI's U-Net)
    with pytest.raises(KdcError, match="unknown task 'x'"):
        get_task("x")


def test_magnitude_and_complex_outputs():
    images = np.array([[[[3.0]], [[4.0]]]], dtype=np.float32)  # (1, 2, 1, 1): 3 + 4i
    assert COMPLEX_RECON.magnitude(images).tolist() == [[[[5.0]]]]
    assert COMPLEX_RECON.complex_image(images).tolist() == [[[[3 + 4j]]]]
    real = images[:, :1] * -1
    assert RECON.magnitude(real) is real  # KD-MRI's real part, unchanged
    with pytest.raises(KdcError, match="no phase"):
        RECON.complex_image(real)


def test_registry_imports_no_torch():
    code = "import sys, kdc.tasks; assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
