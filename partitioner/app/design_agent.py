"""`partition explore --method learned`: a design agent conditioned on the model, pretrained across the corpus.

The agent is a learned surrogate that guides proposals (policies/design_surrogate.py): from the design's axes, its
exact cost/area/leakage, a compact description of the graph (bounded shares: matrix flops, the largest op and the
activations against the weights) and the design-against-model cross terms (peak MAC/s over the model's matrix flops, SRAM and HBM over the weights, the largest chiplet's SRAM over the
largest op, HBM bandwidth over the weights, ...) it predicts P(the model fits), log10 throughput and log10 energy
per inference. Cost, area and leakage come exact from ppa.py, so power = energy x throughput + leakage.

Each proposal scores a pool of candidates (random designs of the space, drawn once per search, plus one-axis
mutations of the designs on the current front): P(fits) times the hypervolume the candidate's optimistic
prediction (mean + one ensemble spread) would add to the evaluated front (pareto.hypervolume at
pareto.HV_REFERENCE). Candidates over the area budget are never proposed (area is exact), nor those whose
predicted power is over the power budget. After each evaluation the surrogate is fine-tuned on the target's
results (half the training weight) replayed beside the corpus's. The planner places each design's partition and
the simulator scores it, as for every method (explore.evaluate_design).
"""
from __future__ import annotations

import math
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from partitioner.app.dse_space import B_PLACES, Design, Space, design_from_params, hardware_of
from partitioner.app.pareto import HV_REFERENCE, hv_point, hypervolume
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw import ppa

AGENT_FILE = "design_agent.pt"
AGENT_KIND = "chiplet-partitioner-design-agent"
FEATURES_VERSION = 1
POOL = 400
"""random designs scored at every proposal (drawn once per search)."""
MUTANTS = 40
"""one-axis mutations of front designs added at every proposal."""
KAPPA = 1.0
"""optimism: ensemble spreads added to the predicted throughput and taken from the predicted energy."""
TARGET_SHARE = 0.5
"""share of the fine-tuning weight the target's own evaluations carry (the corpus's rows carry the rest)."""
_NODES = tuple(sorted(ppa.NODES))
_TOPOLOGIES = ("mesh", "torus", "ring")


def _lg(x: float) -> float:
    return math.log10(max(float(x), 1e-30))


def graph_stats(graph: TensorGraph) -> dict[str, float]:
    """The compact description of a model the agent is conditioned on."""
    flops = float(graph.flops.sum())
    matrix = float(graph.matrix_flops.sum())
    return {"flops": flops + 1, "matrix_flops": matrix + 1, "vector_flops": flops - matrix + 1,
            "weights": float(graph.weight_bytes.sum()) + 1,
            "largest": float((graph.weight_bytes + graph.work_bytes).max()) + 1,
            "largest_work": float(graph.work_bytes.max()) + 1, "activations": float(graph.out_bytes.sum()) + 1,
            "ops": float(graph.n_ops), "matrix_share": matrix / max(flops, 1.0)}


def _graph_columns(g: dict[str, float]) -> list[float]:
    """The model's own columns: only bounded shares. Its sizes enter through the cross terms (design over model):
    raw log sizes of five corpus models let the networks memorise one offset per model and extrapolate wildly on
    a new one (leave-one-model-out on the five corpus models: 0.46-2.8 decades of throughput RMSE with them, 0.26-0.49
    without)."""
    return [g["matrix_share"], _lg(g["largest"] / g["weights"]), _lg(g["activations"] / g["weights"])]


def design_row(design: Design, g: dict[str, float], precision: str) -> tuple[np.ndarray, float, float, float] | None:
    """(features, cost USD, area mm2, leakage W) of a design for a model; None when the silicon cannot be built
    (a die or interposer larger than a wafer)."""
    d = design.canonical()
    hw = hardware_of(d, precision)
    try:
        cost = ppa.ppa(hw, d.process_nm, precision=precision, package=d.package)
    except UserError:
        return None
    clock = d.effective_clock_ghz * 1e9
    chips = hw.chiplets
    macs = sum(c.macs_per_cycle for c in chips) * clock
    vec = sum(c.vector_ops_per_cycle for c in chips) * clock
    sram = sum(c.sram_bytes for c in chips)
    hbm = sum(st.capacity_bytes for st in hw.memory_stacks)
    hbm_bw = sum(st.bytes_per_cycle for st in hw.memory_stacks) * clock
    b = d.b_ids()
    stacks = len(hw.memory_stacks) / d.packages
    row = ([float(d.process_nm == nm) for nm in _NODES] + [float(d.topology == t) for t in _TOPOLOGIES]
           + [float(d.b_place == p and bool(b)) for p in B_PLACES]
           + [math.log2(d.chiplets), math.log2(d.packages), math.log2(d.macs_per_cycle), math.log2(d.vector_ratio),
              math.log2(d.sram_mib), math.log2(d.link_bytes_per_cycle), d.effective_clock_ghz,
              float(d.package == "interposer"), d.hbm_gib / 16, stacks, float(d.hbm_place == "west" and hbm > 0),
              float(bool(b)), len(b) / hw.n_chiplets, math.log2(d.b_macs_per_cycle or 1) * bool(b),
              math.log2(d.b_sram_mib) * bool(b), math.log2(d.b_vector_ratio) * bool(b),
              _lg(cost.area_mm2), _lg(cost.cost_usd), _lg(cost.leakage_w),
              # cross terms: the design against the model
              _lg(2 * macs / g["matrix_flops"]), _lg(vec / g["vector_flops"]), _lg(sram / g["weights"]),
              _lg((sram + hbm) / g["weights"]), _lg(max(c.sram_bytes for c in chips) / g["largest"]),
              _lg(min(c.sram_bytes for c in chips) / g["largest"]),
              _lg(max(c.sram_bytes for c in chips) / g["largest_work"]), _lg((hbm_bw + 1) / g["weights"]),
              _lg(d.link_bytes_per_cycle * clock / g["activations"]), _lg(hw.n_chiplets / g["ops"]),
              float(hbm > 0 and d.package != "interposer")]
           + _graph_columns(g))
    return np.asarray(row, dtype=np.float32), cost.cost_usd, cost.area_mm2, cost.leakage_w


def targets(result: dict) -> tuple[float, float, float]:
    """(fits, log10 throughput, log10 energy per inference) of an evaluated design; nan where it does not fit.
    (Per flop of the model instead carried worse across models: leave-one-model-out throughput correlation
    0.2-0.66 against 0.57-0.93.)"""
    if not result["fits"]:
        return 0.0, math.nan, math.nan
    return 1.0, _lg(result["throughput_per_s"]), _lg(result["energy_j"])


# --- pretraining, saving, loading ----------------------------------------------------------------------------------
def _rows_to_arrays(rows: list[dict], stats: dict[str, dict], precision: str):
    xs, ts = [], []
    for r in rows:
        built = design_row(design_from_params(r["params"]), stats[r["model"]], precision)
        if built is None:
            continue
        xs.append(built[0])
        ts.append(targets(r["result"]))
    t = np.asarray(ts, dtype=np.float32)
    return np.stack(xs), t[:, 0], t[:, 1:]


def pretrain_agent(rows: list[dict], graphs: dict[str, TensorGraph], precision: str, seed: int = 0,
                   epochs: int | None = None):
    """The surrogate fitted on the corpus rows; the agent state (surrogate + its corpus, for replay) and the fit on
    the training rows (fit accuracy, throughput and energy RMSE in decades)."""
    from policies.design_surrogate import Surrogate, SurrogateConfig

    stats = {m: graph_stats(g) for m, g in graphs.items()}
    x, fits, y = _rows_to_arrays(rows, stats, precision)
    cfg = SurrogateConfig(in_dim=x.shape[1], seed=seed)
    sur = Surrogate(cfg, x.mean(0), x.std(0))
    sur.fit(x, fits, y, np.ones(len(x)), cfg.pretrain_epochs if epochs is None else epochs)
    p, mu, _ = sur.predict(x)
    ok = fits > 0
    fit = {"fit_accuracy": float(((p > 0.5) == ok).mean()),
           "throughput_rmse_decades": float(np.sqrt(((mu[ok, 0] - y[ok, 0]) ** 2).mean())),
           "energy_rmse_decades": float(np.sqrt(((mu[ok, 1] - y[ok, 1]) ** 2).mean()))}
    agent = {"kind": AGENT_KIND, "features_version": FEATURES_VERSION, "precision": precision,
             "surrogate": sur.state(), "corpus_x": x, "corpus_fits": fits, "corpus_y": y,
             "corpus_models": sorted(stats)}
    return agent, fit


def save_agent(agent: dict, path: str | Path) -> None:
    """Atomically (temp file, fsync, rename), as the policy checkpoints are written."""
    from policies.checkpoints import atomic_torch_save

    atomic_torch_save(agent, path)


def default_agent_path() -> Path:
    return Path(__file__).resolve().parents[2] / "policies" / "pretrained" / AGENT_FILE


def load_agent(path: str | Path | None = None) -> dict:
    from policies.checkpoints import load_tagged

    path = Path(path) if path else default_agent_path()
    agent = load_tagged(path, AGENT_KIND, "design agent",
                        "pretrain one (python -m partitioner.app.design_agent_train) or pass --method nsga2",
                        weights_only=False)
    if agent.get("features_version") != FEATURES_VERSION:
        raise UserError(f"design agent {path} has features version {agent.get('features_version')}, this code "
                        f"computes {FEATURES_VERSION}", "pretrain it again (python -m partitioner.app.design_agent_train)")
    return agent


def _log_power(log_energy, log_throughput, leakage_w):
    """log10 of ppa.power_w (energy x rate + leakage), summed in log space so that no prediction overflows."""
    ln10 = math.log(10.0)
    return np.logaddexp((np.asarray(log_energy) + np.asarray(log_throughput)) * ln10,
                        np.log(np.maximum(leakage_w, 1e-30))) / ln10


# --- the search ----------------------------------------------------------------------------------------------------
class DesignAgent:
    """Proposes the next design for one target model; `observe` fine-tunes it on each result."""

    def __init__(self, graph: TensorGraph, space: Space, precision: str, seed: int,
                 budgets: tuple[float | None, float | None] = (None, None), agent: dict | None = None) -> None:
        from policies.design_surrogate import Surrogate

        agent = agent or load_agent()
        self.sur = Surrogate.from_state(agent["surrogate"])
        self.corpus = (np.asarray(agent["corpus_x"]), np.asarray(agent["corpus_fits"]), np.asarray(agent["corpus_y"]))
        self.g = graph_stats(graph)
        self.space, self.precision, self.budgets = space, precision, budgets
        self.rng = np.random.default_rng(seed)
        self.rows: dict[tuple, tuple] = {}        # design key -> design_row (None: cannot be built)
        self.raw: dict[tuple, Design] = {}        # design key -> the design as the space spells it
        self.seen: dict[tuple, tuple] = {}        # evaluated design key -> (fits, log thr, log energy)
        self.points: dict[tuple, tuple] = {}      # evaluated fitting key -> objective point (minimisation)
        self.fantasy: dict[tuple, tuple] = {}     # proposed, not yet observed -> predicted point
        axes = space.axes()
        self.pool = [self._design({k: vs[int(self.rng.integers(len(vs)))] for k, vs in axes.items()})
                     for _ in range(POOL)]

    @staticmethod
    def key(design: Design) -> tuple:
        return tuple(asdict(design.canonical()).values())

    def _design(self, params: dict) -> Design:
        d = design_from_params(params)
        self.raw.setdefault(self.key(d), d)
        return d

    def _row(self, d: Design):
        k = self.key(d)
        if k not in self.rows:
            self.rows[k] = design_row(d, self.g, self.precision)
        return self.rows[k]

    def _mutants(self) -> list[Design]:
        front = list(self.points)
        if not front:
            return []
        axes = self.space.axes()
        names = [k for k, vs in axes.items() if len(vs) > 1]
        out = []
        for _ in range(MUTANTS):
            base = self.raw[front[int(self.rng.integers(len(front)))]]
            axis = names[int(self.rng.integers(len(names)))]
            vs = axes[axis]
            out.append(self._design({**asdict(base), axis: vs[int(self.rng.integers(len(vs)))]}))
        return out

    def propose(self, avoid: set[tuple] = frozenset()) -> dict:
        """The next design's parameters (one value per axis of the space)."""
        cands, seen_keys = [], set(self.seen) | set(self.fantasy) | set(avoid)
        for d in self.pool + self._mutants():
            k = self.key(d)
            if k in seen_keys:
                continue
            row = self._row(d)
            if row is None or (self.budgets[0] is not None and row[2] > self.budgets[0]):
                continue
            seen_keys.add(k)
            cands.append((d, row))
        if not cands:   # the pool is spent: a fresh random design
            return {k: vs[int(self.rng.integers(len(vs)))] for k, vs in self.space.axes().items()}
        x = np.stack([r[0] for _, r in cands])
        p, mu, sd = self.sur.predict(x)
        thr = mu[:, 0] + KAPPA * sd[:, 0]
        energy = mu[:, 1] - KAPPA * sd[:, 1]
        leak = np.array([r[3] for _, r in cands])
        cost = np.array([r[1] for _, r in cands])
        log_power = _log_power(energy, thr, leak)
        if self.budgets[1] is not None:
            p = np.where(log_power > math.log10(self.budgets[1]), 0.0, p)
        pts = np.stack([-thr, log_power, np.log10(cost)], 1)
        front = list(self.points.values()) + list(self.fantasy.values())
        base = hypervolume(front, HV_REFERENCE)
        gain = np.zeros(len(cands))
        for i, q in enumerate(pts):
            if p[i] < 0.05 or any(all(f[j] <= q[j] for j in range(3)) for f in front):
                continue
            gain[i] = hypervolume(front + [tuple(q)], HV_REFERENCE) - base
        score = p * gain
        if score.max() <= 0:   # nothing predicted to add: the likeliest fit closest to the front
            need = np.array([max((min(q[j] - f[j] for j in range(3)) for f in front), default=0.0) for q in pts])
            score = np.where(p >= 0.5, -need, -np.inf) if (p >= 0.5).any() else p
        i = int(np.argmax(score))
        d = cands[i][0]
        self.fantasy[self.key(d)] = (float(-mu[i, 0]), float(_log_power(mu[i, 1], mu[i, 0], leak[i])),
                                     float(np.log10(cost[i])))
        return {f.name: getattr(d, f.name) for f in fields(Design) if f.name in self.space.axes()}

    def observe(self, params: dict, result: dict, fine_tune: bool = True) -> None:
        """Record an evaluated design and fine-tune the surrogate on every target result so far."""
        d = self._design(params)
        k = self.key(d)
        self._row(d)
        self.fantasy.pop(k, None)
        self.seen[k] = targets(result)
        if result["fits"]:
            self.points[k] = hv_point(result)
        if fine_tune:
            self.fine_tune()

    def fine_tune(self) -> None:
        keys = [k for k in self.seen if self.rows.get(k) is not None]
        if not keys:
            return
        cx, cf, cy = self.corpus
        tx = np.stack([self.rows[k][0] for k in keys])
        t = np.asarray([self.seen[k] for k in keys], dtype=np.float32)
        x = np.concatenate([cx, tx])
        w = np.concatenate([np.full(len(cx), (1 - TARGET_SHARE) / len(cx)), np.full(len(tx), TARGET_SHARE / len(tx))])
        self.sur.fit(x, np.concatenate([cf, t[:, 0]]), np.concatenate([cy, t[:, 1:]]), w,
                     self.sur.cfg.finetune_steps)
