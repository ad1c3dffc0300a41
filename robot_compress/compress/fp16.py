"""Half-size ONNX files: float weights stored as float16 and cast back to float32 inside the graph.

onnxruntime folds each Cast of a constant once when the session starts, so the model computes in float32
exactly as before, with weights rounded to float16 (relative error <= 2^-11): the file halves, latency and
operator coverage do not change. This is how the CamVid edge teacher (44 MB in float32) fits the
repository's 25 MB budget for models/.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MIN_ELEMENTS = 16  # tiny tensors (shapes, scalars) stay float32: nothing to gain, and some ops need them exact


def store_weights_fp16(src: str | Path, dst: str | Path, model_id: str | None = None) -> Path:
    """Write `dst`: `src` with every float32 initializer of >= MIN_ELEMENTS values stored as float16."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims, dtype=np.int64)) < MIN_ELEMENTS:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # the casts first: the graph stays topologically sorted
    props = {p.key: p.value for p in model.metadata_props}
    if model_id is not None:
        props["model_id"] = model_id
    props["weights_storage"] = "float16"
    props["weights_storage_source"] = json.dumps({"file": src.name})
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    return dst
