"""Outlier-channel split (LLM.int8()-style) before dynamic INT8 quantization.

ONNX Runtime's dynamic quantization gives each activation tensor a single scale, so BERT's few outlier channels
(max |x| 5-20x the median channel, e.g. in layer 0's GELU output) flatten every other channel into a handful
of int8 levels. For every MatMul with a constant weight, ``Y = X @ W`` is rewritten as

    Y = (X * mask) @ W   +   Gather(X, outliers) @ W[outliers]
        └ int8 (outliers zeroed) ┘   └ fp32, k columns only ┘

where ``outliers`` are the ``k`` channels with the largest max |x| measured on calibration text. The int8 part
then sees a tame range; the fp32 part costs ``k/K`` of the MatMul. MatMuls sharing an input (Q/K/V) share the
``Mul`` and the ``Gather``. Dettmers et al., 2022, "LLM.int8(): 8-bit Matrix Multiplication for Transformers at
Scale" (there per token at run time; here the channels are fixed at export time).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.export.smooth import weight_matmuls

__all__ = ["OUTLIER_SUFFIX", "split_outliers"]

logger = logging.getLogger(__name__)

OUTLIER_SUFFIX = "/outliers_fp32"


def split_outliers(src: Path, dst: Path, act_max: dict[str, np.ndarray[Any, Any]], k: int = 4) -> list[str]:
    """Write the split graph to ``dst``; return the names of the fp32 outlier MatMuls (keep them unquantized)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    groups = weight_matmuls(model)
    before: dict[str, list[Any]] = defaultdict(list)  # node name -> nodes to insert before it
    after: dict[str, list[Any]] = defaultdict(list)  # node name -> nodes to insert after it
    kept: list[str] = []
    for act, nodes in groups.items():
        if act not in act_max or act_max[act].shape[0] <= k:
            continue
        idx = np.sort(np.argsort(-act_max[act])[:k]).astype(np.int64)
        mask = np.ones(act_max[act].shape[0], dtype=np.float32)
        mask[idx] = 0.0
        base = act.replace(":", "_")
        masked, picked = f"{base}/inliers", f"{base}/outlier_channels"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(mask, f"{base}/inlier_mask"),
                numpy_helper.from_array(idx, f"{base}/outlier_index"),
            ]
        )
        before[nodes[0].name] += [
            helper.make_node("Mul", [act, f"{base}/inlier_mask"], [masked], name=f"{base}/mask_outliers"),
            helper.make_node(
                "Gather", [act, f"{base}/outlier_index"], [picked], axis=-1, name=f"{base}/gather_outliers"
            ),
        ]
        for node in nodes:
            w = numpy_helper.to_array(inits[node.input[1]])
            w_out = f"{node.name}/outlier_rows"
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[idx]), w_out))
            y, y_in, y_out = node.output[0], f"{node.name}/inlier_out", f"{node.name}/outlier_out"
            node.input[0] = masked
            node.output[0] = y_in
            mm = f"{node.name}{OUTLIER_SUFFIX}"
            after[node.name] += [
                helper.make_node("MatMul", [picked, w_out], [y_out], name=mm),
                helper.make_node("Add", [y_in, y_out], [y], name=f"{node.name}/add_outliers"),
            ]
            kept.append(mm)
    ordered = []
    for node in model.graph.node:
        ordered += before.get(node.name, [])
        ordered.append(node)
        ordered += after.get(node.name, [])
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    onnx.save(model, str(dst))
    logger.info("split %d outlier channels off %d MatMul inputs", k, len(before))
    return kept
