"""The hostile-input table: every case run as a subprocess with a timeout, its outcome recorded.

    python benchmarks/hostile_inputs.py [--only 'NAME;NAME'] [--timeout 300] [--write benchmarks/RESULTS.md]

Each case is a `partition ...` command as a careless or hostile user would type it. The table has the case, the
command, the exit code, the first stderr line and the seconds it took; the wanted outcome of every case is exit 0
with a valid result or exit 2 with one line, no traceback, within the timeout. The script exits 1 if any case
misses that. tests/test_hostile.py runs a fast subset of CASES through the same `run_case`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BERT = "examples/bert-base.onnx"
SECTION = "Hostile inputs"


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    """Arguments of `partition`; {tmp} is the fixtures folder, {out} a fresh output path inside it."""
    want: int
    """Exit code wanted: 0 (a valid result) or 2 (one-line error)."""
    slow: bool = False
    """Left out of the pytest subset."""


CASES = (
    Case("seed -1", ("{tiny}", "--seed", "-1", "--out", "{out}"), 2),
    Case("seed 2**32", ("{tiny}", "--seed", "4294967296", "--method", "greedy", "--out", "{out}"), 2),
    Case("seed beyond 64 bits", ("{tiny}", "--seed", str(2**70), "--out", "{out}"), 2),
    Case("budget 0", ("{tiny}", "--budget", "0", "--out", "{out}"), 2),
    Case("budget 1e9", (BERT, "--chiplets", "16", "--budget", "1000000000", "--out", "{out}"), 2),
    Case("budget 1e6 bounded by --max-time 30", (BERT, "--chiplets", "16", "--method", "random", "--budget",
                                                 "1000000", "--max-time", "30", "--out", "{out}"), 0, slow=True),
    Case("time-limit nan", ("{tiny}", "--time-limit", "nan", "--out", "{out}"), 2),
    Case("max-time -1", ("{tiny}", "--max-time", "-1", "--out", "{out}"), 2),
    Case("chiplets 0", ("{tiny}", "--chiplets", "0", "--out", "{out}"), 2),
    Case("chiplets 10000", (BERT, "--chiplets", "10000", "--out", "{out}"), 2),
    Case("chiplets 1024 greedy", (BERT, "--chiplets", "1024", "--method", "greedy", "--no-certificate",
                                  "--out", "{out}"), 0, slow=True),
    Case("model is a directory", ("{tmp}", "--out", "{out}"), 2),
    Case("model missing", ("{tmp}/nope.onnx", "--out", "{out}"), 2),
    Case("model is random bytes", ("{tmp}/garbage.onnx", "--out", "{out}"), 2),
    Case("model truncated", ("{tmp}/truncated.onnx", "--out", "{out}"), 2),
    Case("input declared [0,64]", ("{tmp}/zero_input.onnx", "--out", "{out}"), 2),
    Case("input declared [-3,64]", ("{tmp}/negative_input.onnx", "--out", "{out}"), 2),
    Case("weight [64,0]", ("{tmp}/empty_weight.onnx", "--out", "{out}"), 2),
    Case("input-shape 0x64", ("{tiny}", "--input-shape", "x=0x64", "--out", "{out}"), 2),
    Case("hop_latency_cycles = -5", ("{tiny}", "--hardware", "{tmp}/neg_hop.toml", "--out", "{out}"), 2),
    Case("hardware not TOML", ("{tiny}", "--hardware", "{tmp}/bad.toml", "--out", "{out}"), 2),
    Case("middle chiplets unsupport most ops", (BERT, "--hardware", "{tmp}/middle.toml", "--method", "greedy",
                                                "--out", "{out}"), 2, slow=True),
    Case("--out is a file", ("{tiny}", "--out", "{tmp}/garbage.onnx"), 2),
    Case("--out holds other files", ("{tiny}", "--out", "{tmp}/foreign"), 2),
    Case("simulate chiplet 2**70", ("simulate", "{tiny}", "--partition", "{tmp}/huge_id.json"), 2),
    Case("simulate unknown node", ("simulate", "{tiny}", "--partition", "{tmp}/ghost.json"), 2),
    Case("simulate not JSON", ("simulate", "{tiny}", "--partition", "{tmp}/bad.toml"), 2),
    Case("train on the examples folder", ("train", "--corpus", "examples", "--out", "{tmp}/p.pt"), 2),
    Case("10,000 MatMuls fanning out, default method, --max-time 120",
         ("{tmp}/fanout.onnx", "--chiplets", "16", "--max-time", "120", "--out", "{out}"), 0, slow=True),
    Case("10,000 MatMuls fanning out, default method, no bound", ("{tmp}/fanout.onnx", "--chiplets", "16",
                                                                  "--out", "{out}"), 0, slow=True),
    Case("10,000 MatMuls fanning out, greedy", ("{tmp}/fanout.onnx", "--chiplets", "16", "--method", "greedy",
                                                "--out", "{out}"), 0, slow=True),
)


# --- fixtures -------------------------------------------------------------------------------------------------------
def write_mlp(path: Path, x_dims=("batch", 64), w_dims=(64, 64), layers: int = 3) -> None:
    """A chain of `layers` MatMul + Relu with zero weights of `w_dims`, input `x` of `x_dims` (dims as declared,
    bad ones included: the hostile cases and tests/test_reliability.py build their models with it)."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, list(w_dims),
                                        np.zeros(int(np.prod(w_dims)), np.float32)))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_dims))],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def fanout_model(path: Path, n: int = 10_000, width: int = 64) -> None:
    """One input feeding n independent MatMuls; graph only: each weight refers to external data that is absent
    (as in the shipped examples), so the file stays small."""
    import onnx
    from onnx import TensorProto, helper

    inits = []
    for i in range(n):
        w = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[width, width],
                        data_location=TensorProto.EXTERNAL)
        for key, value in (("location", "absent.bin"), ("offset", str(4 * width * width * i)),
                           ("length", str(4 * width * width))):
            entry = w.external_data.add()
            entry.key, entry.value = key, value
        inits.append(w)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, width]) for i in range(n)]
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"], name=f"mm{i}") for i in range(n)]
    graph = helper.make_graph(nodes, "fanout", [x], outs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def make_fixtures(tmp: Path, slow: bool = True) -> None:
    from partitioner.app.config import RunConfig
    from partitioner.app.run import run

    tiny = tmp / "tiny.onnx"
    write_mlp(tiny)
    (tmp / "garbage.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp / "truncated.onnx").write_bytes(tiny.read_bytes()[: len(tiny.read_bytes()) // 2])
    write_mlp(tmp / "zero_input.onnx", x_dims=(0, 64))
    write_mlp(tmp / "negative_input.onnx", x_dims=(-3, 64))
    write_mlp(tmp / "empty_weight.onnx", w_dims=(64, 0))
    (tmp / "neg_hop.toml").write_text("chiplets = 4\nhop_latency_cycles = -5\n")
    (tmp / "bad.toml").write_text("chiplets = = 4\n")
    (tmp / "middle.toml").write_text(
        "chiplets = 16\n[chiplet]\nsram_mib = 48\n[[overrides]]\nids = [2,3,4,5,6,7,8,9,10,11,12,13]\n"
        'unsupported_ops = ["MatMul", "Gemm", "Add", "Softmax", "LayerNormalization"]\n')
    (tmp / "foreign").mkdir(exist_ok=True)
    (tmp / "foreign" / "notes.txt").write_text("mine")
    good = tmp / "good"
    run(RunConfig(model=str(tiny), chiplets=4, method="greedy", out=str(good), certificate=False))
    doc = json.loads((good / "partition.json").read_text())
    for name, edit in (("huge_id", {"matmul0": 2**70}), ("ghost", {"ghost": 0})):
        bad = json.loads(json.dumps(doc))
        bad["assignment"].update(edit)
        (tmp / f"{name}.json").write_text(json.dumps(bad))
    if slow:
        fanout_model(tmp / "fanout.onnx")


# --- running --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    case: Case
    command: str
    code: int | None
    first_line: str
    seconds: float
    traceback: bool

    @property
    def ok(self) -> bool:
        return self.code == self.case.want and not self.traceback


def run_case(case: Case, tmp: Path, timeout: float) -> Outcome:
    out = tmp / f"out-{abs(hash(case.name))}"
    args = [a.format(tmp=tmp, out=out, tiny=tmp / "tiny.onnx") for a in case.args]
    cmd = [sys.executable, "-m", "partitioner.app.cli", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        code, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, err = None, f"timed out after {timeout:g} s " + (exc.stderr or b"").decode(errors="replace")[-200:]
    seconds = time.perf_counter() - start
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("evaluating")]
    shown = " ".join(["partition", *(a.replace(str(out), "$OUT").replace(str(tmp), "$TMP") for a in args)])
    return Outcome(case, shown, code, lines[0] if lines else "", seconds, "Traceback" in err)


def table(outcomes: list[Outcome]) -> str:
    rows = ["| case | command | exit | first stderr line | s | ok |", "|---|---|---|---|---|---|"]
    for o in outcomes:
        line = o.first_line.replace("|", "\\|")
        line = line if len(line) <= 160 else line[:157] + "..."
        rows.append(f"| {o.case.name} | `{o.command}` | {o.code if o.code is not None else 'timeout'} | {line} | "
                    f"{o.seconds:.1f} | {'yes' if o.ok else '**no**'} |")
    return "\n".join(rows)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) this script's own section of RESULTS.md (benchmarks/results_md.py, atomically)."""
    from benchmarks.results_md import update_section

    update_section(SECTION, body, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="case names separated by ';' (names contain commas)")
    ap.add_argument("--fast", action="store_true", help="leave out the slow cases")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--write", default=None, help="RESULTS.md to put the table in (own section)")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if (args.only is None or c.name in args.only.split(";")) and not (args.fast and c.slow)]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        make_fixtures(tmp, slow=any(c.slow for c in cases))
        outcomes = []
        for case in cases:
            outcomes.append(run_case(case, tmp, args.timeout))
            o = outcomes[-1]
            print(f"{'ok ' if o.ok else 'BAD'} {o.seconds:6.1f}s exit {o.code}  {case.name}: {o.first_line[:100]}",
                  flush=True)
    body = table(outcomes)
    if args.write:
        cmd = "python benchmarks/hostile_inputs.py" + (f" --timeout {args.timeout:g}" if args.timeout != 300 else "")
        write_section(Path(args.write), f"Command: `{cmd} --write benchmarks/RESULTS.md` (2 shared cores, "
                      f"{time.strftime('%Y-%m-%d')}). Wanted: exit 0 with a valid result or exit 2 with one line, "
                      f"no traceback, within {args.timeout:g} s.\n\n" + body)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
