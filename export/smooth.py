"""SmoothQuant-style outlier migration before dynamic INT8 quantization.

Dynamic quantization gives each activation tensor one scale, so a few outlier channels (BERT's LayerNorm and
GELU outputs have them) squeeze every other channel into a handful of int8 levels. For ``Y = X @ W`` we rewrite
``Y = (X * 1/s) @ (diag(s) W)`` with ``s_k = max|X_k|^α / max|W_k|^(1-α)`` measured on calibration text: the
activation gets flatter, the weight (quantized per output channel) absorbs the range. The graph gains one
``Mul`` per distinct MatMul input (Q/K/V share theirs); weights are rewritten in place. Xiao et al., 2023,
"SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models".
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["activation_channel_max", "smooth_model", "weight_matmuls"]

logger = logging.getLogger(__name__)


def weight_matmuls(model: Any) -> dict[str, list[Any]]:
    """MatMul nodes with a 2-D constant weight, grouped by their activation input."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and len(inits[node.input[1]].dims) == 2:
            groups[node.input[0]].append(node)
    return groups


def activation_channel_max(model_path: Path, feeds: Sequence[dict[str, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """Per-channel max |x| of every weight-MatMul input over ``feeds`` (padding included)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    names = list(weight_matmuls(model))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    stats: dict[str, np.ndarray[Any, Any]] = {}
    for feed in feeds:
        mask = feed["attention_mask"].astype(bool)
        for name, value in zip(names, session.run(names, feed), strict=True):
            v = np.abs(value[mask]) if value.ndim == 3 and value.shape[:2] == mask.shape else np.abs(value)
            m = v.reshape(-1, v.shape[-1]).max(axis=0)
            stats[name] = np.maximum(stats[name], m) if name in stats else m
    return stats


def smooth_model(
    src: Path, dst: Path, act_max: dict[str, np.ndarray[Any, Any]], alpha: float | Callable[[str], float] = 0.5
) -> int:
    """Write the smoothed graph to ``dst``; return how many activation tensors were smoothed.

    ``alpha`` is one migration strength for all, or a function of the activation tensor's name.
    """
    alpha_of = alpha if callable(alpha) else (lambda _name: float(alpha))
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    groups = weight_matmuls(model)
    consumers: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            consumers[name] += 1
    new_nodes: dict[str, Any] = {}
    count = 0
    for act, nodes in groups.items():
        if act not in act_max:
            continue
        weights = {n.input[1]: numpy_helper.to_array(inits[n.input[1]]).astype(np.float32) for n in nodes}
        if any(consumers[w] != 1 for w in weights):  # a shared weight cannot be rescaled for one user only
            continue
        w_max = np.max(np.stack([np.abs(w).max(axis=1) for w in weights.values()]), axis=0)
        a = alpha_of(act)
        s = np.power(np.maximum(act_max[act], 1e-5), a) / np.power(np.maximum(w_max, 1e-5), 1 - a)
        s = np.clip(s, 1e-2, 1e2).astype(np.float32)
        for wname, w in weights.items():
            inits[wname].CopyFrom(numpy_helper.from_array(w * s[:, None], wname))
        scale_name, out_name = f"{act}_smooth_inv_scale", f"{act}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), scale_name))
        new_nodes[act] = onnx.helper.make_node("Mul", [act, scale_name], [out_name], name=f"{act}_smooth")
        for n in nodes:
            n.input[0] = out_name
        count += 1
    # insert each Mul just before its first consumer, keeping the node list topologically sorted
    ordered = []
    placed: set[str] = set()
    for node in model.graph.node:
        for name in node.input:
            base = name.removesuffix("_smoothed")
            if name.endswith("_smoothed") and base in new_nodes and base not in placed:
                ordered.append(new_nodes[base])
                placed.add(base)
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    onnx.save(model, str(dst))
    logger.info("smoothed %d MatMul inputs", count)
    return count
