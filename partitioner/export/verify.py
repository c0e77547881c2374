"""`partition split --verify`: run the stages in onnxruntime against the whole model on the same random inputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from partitioner.core.errors import UserError
from partitioner.export.stages import Split


@dataclass(frozen=True)
class Verification:
    """The stages run in manifest order against the whole model on the same random inputs."""

    max_abs_diff: float
    per_output: dict[str, float]
    stages_run: int


def random_inputs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds of the resolved shapes: floats ~ N(0, 1); integers and booleans in {0, 1}, valid as token
    ids, token types and masks alike."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = tuple(shapes[vi.name])
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def verify_split(model: onnx.ModelProto, split: Split, feeds: dict[str, np.ndarray]) -> Verification:
    """Run the whole model and the stages (in order, each fed from the model inputs and earlier stages' outputs)
    in onnxruntime on `feeds`; the largest absolute difference over every model output."""
    import onnxruntime as ort

    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise UserError(f"the model's weight '{t.name}' is not in memory (its external data file is absent)",
                            "verify a model exported with its weights")

    def session(m: onnx.ModelProto):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # No graph rewrites: the whole model and the stages run the same kernels, so differences are the split's.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    whole = dict(zip(split.model_outputs, session(model).run(list(split.model_outputs), feeds)))
    env = dict(feeds)
    for s in split.stages:
        names = [o.name for o in s.model.graph.output]
        for t, v in zip(names, session(s.model).run(names, {t: env[t] for t in s.inputs})):
            env[t] = v
    diffs = {t: float(np.max(np.abs(whole[t].astype(np.float64) - env[t].astype(np.float64)), initial=0.0))
             for t in split.model_outputs}
    return Verification(max(diffs.values(), default=0.0), diffs, len(split.stages))
