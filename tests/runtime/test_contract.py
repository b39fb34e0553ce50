"""The typed contract (kdc.runtime.contract) against the files kdc has shipped: read and written back key for key."""

import json
from pathlib import Path

import onnx
import pytest

import kdc.runtime as rt
from kdc.runtime.contract import Contract

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "kdc" / "pretrained").glob("*/*.onnx")) + [ROOT / "tests" / "runtime" / "data" /
                                                                    "old_student.onnx"]


def stored(path: Path) -> dict:
    props = {prop.key: prop.value for prop in onnx.load(path, load_external_data=False).metadata_props}
    return json.loads(props["kdc.contract"])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_shipped_contracts_read_typed_and_write_back_unchanged(path):
    data = stored(path)
    contract = Contract.from_dict(data, path)
    assert contract.to_dict() == data
    # Single-coil DC-CNNs (masked DC lowering) or multi-coil SENSE models (DC in the graph: no lowering, RSS image).
    expected = {"recon": ("real part", "masked"), "recon_multicoil": ("magnitude", "none")}[contract.task]
    assert (contract.output_kind, contract.dc_lowering.split()[0]) == expected
    assert contract.image_size == tuple(data["image_size"]) and contract.input_names == ["kspace", "mask"]
    assert contract.acceleration == data["acceleration"] and contract.model.role == data["model"]["role"]


def test_fields_older_files_lack_read_as_their_meaning_and_stay_absent():
    data = stored(SHIPPED[-1])  # an export from before precision and mask_rows were recorded
    assert "precision" not in data and "mask_rows" not in data
    data.pop("task")
    contract = Contract.from_dict(data, "old.onnx")
    assert (contract.task, contract.precision, contract.mask_rows) == ("recon", None, None)
    assert contract.validated_precision() == (None, "f32") and contract.precision_name == "f32"
    assert contract.to_dict() == data


def test_a_baked_contract_without_its_lines_is_refused_in_one_line():
    data = stored(SHIPPED[-1])
    data["inputs"] = data["inputs"][:1]
    with pytest.raises(rt.RuntimeModelError) as err:
        Contract.from_dict(data, "baked.onnx")
    assert str(err.value) == "baked.onnx: contract has no 'mask' input and no baked 'mask_columns' or 'mask_rows'"
    data["mask_columns"] = [0, 1, 5]
    assert Contract.from_dict(data, "baked.onnx").mask_columns == (0, 1, 5)
