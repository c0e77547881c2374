"""Fuzz the three input files a user hands us: any ONNX bytes, hardware TOML or partition.json gives a result or a
UserError, never another exception (issue 15). Kept small (max_examples modest, no deadline) so the suite stays
fast; raise FUZZ_EXAMPLES in the environment for a longer hunt."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from partitioner.app.simulate_cmd import resimulate
from partitioner.core.errors import UserError
from partitioner.hw.toml import hardware_from_toml
from partitioner.frontend.load import load_onnx

DATA = Path(__file__).parent / "data"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _result_or_user_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        assert "\n" not in exc.one_line()
        return exc


# --- ONNX -------------------------------------------------------------------------------------------------------------
SEED_MODEL = (DATA / "tiny_mlp.onnx").read_bytes()


@st.composite
def mutated_bytes(draw):
    data = bytearray(SEED_MODEL)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


_OPS = ["MatMul", "Add", "Relu", "Gemm", "Softmax", "Reshape", "Transpose", "Concat", "Conv", "LayerNormalization",
        "Gather", "Shape", "Mul", "Custom"]
_dim = st.one_of(st.integers(-2, 5), st.sampled_from(["batch", "seq", ""]))


@st.composite
def random_models(draw):
    """Small, often ill-formed graphs: random op types over random earlier tensors, dims that may be 0, negative
    or symbolic, weights of random shape."""
    rank = draw(st.integers(0, 3))
    x_dims = [draw(_dim) for _ in range(rank)]
    inits, nodes, tensors = [], [], ["x"]
    for k in range(draw(st.integers(0, 3))):
        shape = [draw(st.integers(0, 4)) for _ in range(draw(st.integers(0, 3)))]
        inits.append(helper.make_tensor(f"w{k}", TensorProto.FLOAT, shape,
                                        np.zeros(int(np.prod(shape)) if shape else 1, np.float32)))
        tensors.append(f"w{k}")
    for i in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(_OPS))
        ins = draw(st.lists(st.sampled_from(tensors), min_size=0, max_size=3))
        nodes.append(helper.make_node(op, ins, [f"t{i}"], name=draw(st.sampled_from([f"n{i}", "dup", ""]))))
        tensors.append(f"t{i}")
    x = helper.make_tensor_value_info("x", draw(st.sampled_from([TensorProto.FLOAT, TensorProto.INT64, 0])),
                                      x_dims if draw(st.booleans()) else None)
    out = helper.make_tensor_value_info(tensors[-1], TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "fuzz", [x], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", draw(st.sampled_from([1, 13, 17, 99])))])
    return model.SerializeToString()


@FUZZ
@given(data=st.one_of(mutated_bytes(), random_models(), st.binary(max_size=64)))
def test_any_onnx_bytes_load_or_raise_a_user_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    path.write_bytes(data)
    _result_or_user_error(load_onnx, str(path), precision="fp16")


# --- hardware TOML ----------------------------------------------------------------------------------------------------
_KEYS = ["name", "chiplets", "rows", "cols", "topology", "clock_ghz", "link_bytes_per_cycle", "hop_latency_cycles",
         "link_pj_per_bit", "bogus"]
_CHIP_KEYS = ["kind", "macs_per_cycle", "vector_ops_per_cycle", "sram_mib", "sram_bytes_per_cycle", "mac_pj",
              "unsupported_ops", "ids"]
_value = st.one_of(st.integers(-3, 70), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.sampled_from(['"mesh"', '"torus"', '"ring"', '"chain"', '"all-to-all"', '"x"', "true",
                                    '["MatMul"]', "[0, 1, 99]", "[]", "{}"]))


def _toml_value(v) -> str:
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    return str(v)


@st.composite
def toml_texts(draw):
    lines = [f"{k} = {_toml_value(draw(_value))}" for k in draw(st.lists(st.sampled_from(_KEYS), unique=True))]
    for table in draw(st.lists(st.sampled_from(["[chiplet]", "[[overrides]]", "[other]"]), max_size=3)):
        lines.append(table)
        lines += [f"{k} = {_toml_value(draw(_value))}" for k in draw(st.lists(st.sampled_from(_CHIP_KEYS),
                                                                              unique=True, max_size=4))]
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=st.one_of(toml_texts(), st.text(max_size=40)))
def test_any_hardware_toml_loads_or_raises_a_user_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("hw") / "hw.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    hw = _result_or_user_error(hardware_from_toml, str(path))
    if not isinstance(hw, UserError) and hw.n_chiplets <= 64:
        hw.route(0, hw.n_chiplets - 1)     # a loaded package routes


# --- partition.json ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A partition.json a real run wrote for tests/data/tiny_mlp.onnx on 3 chiplets."""
    from partitioner.app.config import RunConfig
    from partitioner.app.run import run

    out = tmp_path_factory.mktemp("run") / "o"
    run(RunConfig(model=str(DATA / "tiny_mlp.onnx"), chiplets=3, method="greedy", out=str(out), certificate=False))
    return json.loads((out / "partition.json").read_text())


_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=6)),
                     lambda kids: st.one_of(st.lists(kids, max_size=3),
                                            st.dictionaries(st.text(max_size=6), kids, max_size=3)), max_leaves=8)
_FIELDS = ["assignment", "chiplets", "hardware", "input_shapes", "precision", "method"]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(_FIELDS + ["node"]), _json), max_size=3),
       whole=st.one_of(st.none(), _json))
def test_any_partition_json_resimulates_or_raises_a_user_error(tmp_path_factory, saved, edits, whole):
    doc = json.loads(json.dumps(saved))
    for field, value in edits:
        if field == "node":
            doc["assignment"][next(iter(doc["assignment"]))] = value
        else:
            doc[field] = value
    if whole is not None:
        doc = whole
    path = tmp_path_factory.mktemp("pj") / "partition.json"
    path.write_text(json.dumps(doc))
    _result_or_user_error(resimulate, str(DATA / "tiny_mlp.onnx"), str(path), {}, None, None, None, None)
