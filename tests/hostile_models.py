"""ONNX models built for the custom-model guards: shared by tests/security/test_models.py and bench/models.py.

Every model keeps the built-in model's contract (input ``features`` [N, 3], metadata copied from the
built-in model, output ``score`` [N]), so only what the graph does makes it hostile. Needs ``onnx``
(a development dependency; the operator image does not have it).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from vigil.adapters import inference

K = 3  # the built-in model's feature count; the test models reuse its metadata


def onnx_model(nodes: list[onnx.NodeProto], initializers: list[TensorProto],
               domains: tuple[tuple[str, int], ...] = (("", 17),)) -> bytes:
    """A contract-abiding model: input features[N,3], output ``score`` [N] (named in the metadata)."""
    builtin = onnx.load_from_string(inference.builtin_bytes())
    graph = helper.make_graph(
        nodes, "hostile",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", K])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in domains])
    model.ir_version = 8
    for prop in builtin.metadata_props:
        if prop.key != "vigil.score_output":
            model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="vigil.score_output", value="score")
    return bytes(model.SerializeToString())


def score_plus(tensor_name: str) -> list[onnx.NodeProto]:
    """score = sum(features, axis 1) * 0 + <tensor>: the tensor's value comes out as every score."""
    return [
        helper.make_node("ReduceSum", ["features", "axes"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["z", tensor_name], ["score"]),
    ]


def consts() -> list[TensorProto]:
    return [helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]


def constant_of_shape(shape: list[int], dynamic: bool = False, matmul: bool = False) -> list[onnx.NodeProto]:
    """score = sum(ConstantOfShape(shape)) broadcast: allocates prod(shape) floats when run.

    ``dynamic`` computes the shape at run time (shape + 0), so the static check cannot see it;
    ``matmul`` squares the constant matrix (2 n^3 multiply-adds for an n x n shape)."""
    shape_tensor = helper.make_tensor("shape_value", TensorProto.INT64, [len(shape)], shape)
    if dynamic:
        nodes = [helper.make_node("Constant", [], ["half"], value=shape_tensor),
                 helper.make_node("Constant", [], ["nothing"],
                                  value=helper.make_tensor("n", TensorProto.INT64, [1], [0])),
                 helper.make_node("Add", ["half", "nothing"], ["shape"])]
    else:
        nodes = [helper.make_node("Constant", [], ["shape"], value=shape_tensor)]
    return [*nodes,
            helper.make_node("ConstantOfShape", ["shape"], ["big"],
                             value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
            *([helper.make_node("MatMul", ["big", "big"], ["product"])] if matmul else []),
            helper.make_node("ReduceSum", ["product" if matmul else "big"], ["total"], keepdims=0),
            *score_plus("total")]


def benign() -> bytes:
    """A custom model that does nothing costly (every score 0), about the size of the hostile ones."""
    return onnx_model(score_plus("zero"), consts())


def four_gib(dynamic: bool) -> bytes:
    """ConstantOfShape([2^30]) floats: 4 GiB when run. Constant shape, or computed (static check blind)."""
    return onnx_model(constant_of_shape([1 << 30], dynamic=dynamic), consts())


def matmul(n: int) -> bytes:
    """An n x n matrix of ones squared: CPU-heavy (onnxruntime folds it while building the session)."""
    return onnx_model(constant_of_shape([n, n], dynamic=True, matmul=True), consts())
