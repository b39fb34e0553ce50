"""What a file may declare: one overridable limit for every reader, data stored as declared, nothing outside the
file; reader notices held back until a read succeeds."""

import h5py
import numpy as np
import pytest

from kdc.data import DataError
from kdc.data.formats import inspect_volume, notice_once, notices_after_success, read_slices
from kdc.data.formats.limits import DEFAULT_MAX_INPUT_BYTES, max_input_bytes
from tests.crafted_files import fastmri


def test_the_input_limit_is_kdc_max_input_bytes(tmp_path, monkeypatch):
    path = fastmri(tmp_path / "scan.h5", coils=3)  # 2 x 3 x 40 x 32 complex64: 61,440 bytes
    assert max_input_bytes() == DEFAULT_MAX_INPUT_BYTES
    assert inspect_volume(path).slices == 2
    monkeypatch.setenv("KDC_MAX_INPUT_BYTES", "50K")
    with pytest.raises(DataError, match=r"scan.h5: 'kspace' declares 2 x 3 x 40 x 32 values \(61.4 kB in memory\), "
                                        r"above the input limit of 51.2 kB; raise KDC_MAX_INPUT_BYTES"):
        inspect_volume(path)
    monkeypatch.setenv("KDC_MAX_INPUT_BYTES", "61440")
    assert inspect_volume(path).coils == 3
    monkeypatch.setenv("KDC_MAX_INPUT_BYTES", "lots")
    with pytest.raises(DataError, match="KDC_MAX_INPUT_BYTES='lots': expected a size in bytes"):
        inspect_volume(path)


def test_a_stored_kspace_that_is_a_group_is_refused(tmp_path):
    path = tmp_path / "kd.h5"
    with h5py.File(path, "w") as file:
        file["volfs"] = np.ones((8, 8, 2), np.float32)
        file.create_group("kspace_volus_4")
    with pytest.raises(DataError, match=r"kd.h5: 'kspace_volus_4' is a group, expected complex \(8, 8, 2\)"):
        read_slices(path, acceleration=4)


def test_notices_are_said_only_when_the_read_succeeds(capsys):
    with pytest.raises(DataError), notices_after_success():
        notice_once("test:refused", "reading repetition 0 only, of 4")
        raise DataError("refused")
    assert capsys.readouterr().err == ""
    with notices_after_success():
        notice_once("test:read", "reading repetition 0 only, of 4")
        assert capsys.readouterr().err == ""
    assert capsys.readouterr().err == "kdc: reading repetition 0 only, of 4\n"
