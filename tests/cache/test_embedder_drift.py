"""``bench/embedder_drift.py``'s emulation of onnxruntime's u8s8 kernel on x86 without VNNI, on a one-MatMul
model through onnx's reference evaluator, against the products worked out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench")]

import embedder_drift  # noqa: E402


def run(a: list[list[int]], b: list[list[int]], a_zero: int, *, saturate: bool) -> np.ndarray:
    weights = np.asarray(b, dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])],
        "one",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, weights.shape[1]])],
        [
            numpy_helper.from_array(weights, "b"),
            numpy_helper.from_array(np.array(a_zero, dtype=np.uint8), "za"),
            numpy_helper.from_array(np.zeros(weights.shape[1], dtype=np.int8), "zb"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ops = [embedder_drift.MatMulInteger] if saturate else None
    (y,) = ReferenceEvaluator(model, new_ops=ops).run(None, {"a": np.asarray(a, dtype=np.uint8)})
    return np.asarray(y)


def test_an_adjacent_pair_saturates_to_int16_before_the_zero_point_is_taken_off() -> None:
    b = [[127, 1, -128], [127, -128, -128], [3, 5, 0]]  # k = 0, 1 pair up; k = 2 pairs with the padding
    a = [[255, 255, 10], [100, 100, 10]]
    exact = run(a, b, 128, saturate=False)
    saturated = run(a, b, 128, saturate=True)
    # row 0, column 0: 255·127 + 255·127 = 64,770 → 32,767; then + 10·3, less 128 · (127 + 127 + 3)
    assert saturated[0, 0] == 32767 + 30 - 128 * 257
    assert exact[0, 0] == 64770 + 30 - 128 * 257
    # column 1's weights cannot saturate (|1| + |-128| = 129 is checked, 255 - 32,640 stays in range)
    assert saturated[0, 1] == exact[0, 1]
    assert saturated[0, 2] == -32768 - 128 * -256  # -65,280 → -32,768
    # row 1: 100·127·2 = 25,400 fits in int16: exact
    assert np.array_equal(saturated[1], exact[1])
