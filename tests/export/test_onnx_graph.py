import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kdc.export.onnx_graph import read_contract, remove_duplicate_initializers, set_contract


def two_matmuls_with_twin_weights() -> onnx.ModelProto:
    weight = np.arange(9, dtype=np.float32).reshape(3, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"]),
         helper.make_node("Add", ["y", "b"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(weight, "w1"), numpy_helper.from_array(weight.copy(), "w2"),
         numpy_helper.from_array(weight[0], "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.ones((1, 3), np.float32)})[0]


def test_duplicates_are_removed_and_the_result_is_unchanged():
    model = two_matmuls_with_twin_weights()
    before = run(model)
    assert remove_duplicate_initializers(model) == 1
    assert [t.name for t in model.graph.initializer] == ["w1", "b"]
    assert [list(n.input) for n in model.graph.node][:2] == [["x", "w1"], ["h", "w1"]]
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(run(model), before)
    assert remove_duplicate_initializers(model) == 0


def test_contract_round_trips_and_keeps_other_metadata():
    model = two_matmuls_with_twin_weights()
    helper.set_model_props(model, {"author": "x"})
    set_contract(model, {"contract_version": 1, "inputs": []}, {"kdc.version": "0.1.0"})
    set_contract(model, {"contract_version": 1, "inputs": ["kspace"]}, {"kdc.version": "0.1.0"})
    props = {p.key: p.value for p in model.metadata_props}
    assert sorted(props) == ["author", "kdc.contract", "kdc.version"]
    assert read_contract(model) == {"contract_version": 1, "inputs": ["kspace"]}
