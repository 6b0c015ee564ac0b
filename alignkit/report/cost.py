"""The compute-matched view: what each run's training cost, point by point, with the shared stages it needed.

Every trajectory checkpoint records the run's budget so far (``budget_*`` keys,
:mod:`alignkit.run.trajectory`);
here those counters become cumulative compute: tokens through a forward and backward pass (trained), tokens
through a forward pass only (sampling, scoring rollouts, the reference pass), tokens sampled, wall seconds,
and FLOPs estimated as 6N per trained token and 2N per forward-only token (N: the policy's parameter count).
Each run is charged the shared stages its method needed: the reward model (PPO, GRPO, RLOO, Best-of-N) and the
reference log-probs of the pairs (DPO family, KTO). The SFT policy and the preference pairs, which every
compared method starts from or learns from, are charged to none. Nothing is trained or sampled here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from alignkit.eval.matched_kl import seeds_needed, t_bounds
from alignkit.eval.summary import GOLD_MEAN
from alignkit.report.records import RunRecord

RULE = ("FLOPs estimated as 6N per trained token (forward and backward) and 2N per forward-only token "
        "(sampling, scoring rollouts, the reference pass), N the policy's parameter count (the reward model "
        "and PPO's value model share its backbone, so N for them too; PPO's value model, shared trunk or "
        "not, doubles its trained and adds to its scoring passes; LoRA counted as full training; prompt "
        "tokens of rollouts not counted). Each entry is charged the shared stages its method needed: the "
        "reward model's training (PPO, GRPO, RLOO, Best-of-N) and the reference pass over the training pairs "
        "(DPO family, KTO: tokens estimated from the mean tokens per trained sequence); the SFT policy and "
        "the preference pairs, shared by every compared method, are charged to none. Wall seconds: training "
        "only (checkpoint evaluation excluded), plus the longest time any run of the comparison spent on a "
        "shared stage it needed (the run that built it; the others loaded it from the cache)")
FIRST_RULE = ("target: the highest gold reward every method reaches at some evaluated point in every "
              "training seed (the lowest of the methods' best points, seed by seed); per seed, a method's "
              "cost is the least compute at which one of its settings reaches it, and its cost is the "
              "geometric mean over seeds; the cheapest method is reached first when a t interval (k - 1 "
              "degrees of freedom) over the paired seeds' log ratios of the runner-up's cost to its own "
              "excludes 1 (one test at 5%, outside the matched-KL family); one seed names nothing first; "
              "entries that train nothing (Best-of-N spends its compute when sampling) are left out")
COLUMNS = ("trained_tokens", "forward_tokens", "sampled_tokens", "wall_s", "flops")


@dataclass
class SharedCost:
    """What a run's shared stages cost (added to every point of its trajectory)."""

    trained_tokens: float = 0.0
    forward_tokens: float = 0.0
    wall_s: float = 0.0


def _stage_wall(runs: list[RunRecord], stage: str, key_name: str, key: str | None) -> float:
    """The longest time a run of the comparison spent on a shared stage with this cache key."""
    times = [float((r.manifest.get("timings_s") or {}).get(stage) or 0.0) for r in runs
             if (r.manifest.get("artifact_keys") or {}).get(key_name) == key]
    return max(times, default=0.0)


def shared_cost(run: RunRecord, runs: list[RunRecord]) -> SharedCost:
    """The shared stages ``run``'s method needed, as tokens and wall seconds (``runs``: the comparison)."""
    keys, cost = run.manifest.get("artifact_keys") or {}, SharedCost()
    rm = run.manifest.get("reward_model") or {}
    if keys.get("reward_model") and rm:
        cost.trained_tokens += float((rm.get("budget") or {}).get("train_tokens") or 0)
        cost.wall_s += _stage_wall(runs, "reward model", "reward_model", keys["reward_model"])
    if keys.get("reference_logps"):
        budget, data = run.summary.budget or {}, run.summary.training_data or {}
        pairs = data.get("train_pairs")
        if pairs and budget.get("train_sequences"):
            per_sequence = budget["train_tokens"] / budget["train_sequences"]
            unpaired = data.get("unpaired")
            cost.forward_tokens += pairs * (1 if unpaired else 2) * per_sequence
        cost.wall_s += _stage_wall(runs, "reference logps", "reference_logps", keys["reference_logps"])
    return cost


def _passes(run: RunRecord) -> tuple[int, int]:
    """(passes trained per trained token, forward passes per sampled token): PPO's value model trains beside
    the policy (value_model: shared too, whose head takes a second pass through the policy's trunk); each
    sampled token is generated once and then scored by the reference and the reward model (gold: no LM
    pass), PPO's policy and value model too."""
    method = run.summary.method
    settings = (run.manifest.get("recipe") or {}).get("methods", {}).get(method) or {}
    reward_model = settings.get("reward", "reward_model") != "gold"
    if method == "ppo":
        return 2, 1 + 3 + reward_model
    return 1, 1 + 1 + reward_model


def point_compute(run: RunRecord, budget: dict, wall: float | None, shared: SharedCost) -> dict:
    """Cumulative compute at a point whose own budget is ``budget`` (keys
    as :class:`~alignkit.context.Budget`)."""
    models, forward_per_sampled = _passes(run)
    sampled = float(budget.get("generated_tokens") or 0)
    trained = models * float(budget.get("train_tokens") or 0) + shared.trained_tokens
    forward = forward_per_sampled * sampled + shared.forward_tokens
    n = ((run.cost or {}).get("training") or {}).get("policy_parameters")
    return {"trained_tokens": trained, "forward_tokens": forward, "sampled_tokens": sampled,
            "wall_s": (wall + shared.wall_s) if wall is not None else None,
            "flops": 6 * n * trained + 2 * n * forward if n else None}


def run_curve(run: RunRecord, runs: list[RunRecord]) -> list[dict]:
    """The run's points in order of compute: the reference (the shared stages only), every checkpoint that
    recorded its budget, and the final evaluation; each ``{step, gold, ...compute}``."""
    shared, cost = shared_cost(run, runs), run.cost
    walls = (cost.get("training") or {}).get("wall_s") or {}  # measured: in the manifest, by checkpoint step
    points = [{"step": 0, "gold": run.summary.reference_gold_reward_mean,
               **point_compute(run, {}, 0.0, shared)}]
    for p in sorted(run.trajectory, key=lambda p: p["step"]):
        if "budget_train_tokens" in p and p.get(GOLD_MEAN) is not None:
            budget = {k[len("budget_"):]: v for k, v in p.items() if k.startswith("budget_")}
            points.append({"step": p["step"], "gold": p[GOLD_MEAN],
                           **point_compute(run, budget, walls.get(str(p["step"])), shared)})
    budget = run.summary.budget or {}
    wall = walls.get("last", cost.get("train_wall_s"))  # runs without a trajectory: the training stage's time
    final = {"step": budget.get("steps", 0), "gold": run.summary.gold_reward_mean,
             **point_compute(run, budget, wall, shared)}
    return [p for p in points if p["step"] < final["step"]] + [final]


def budget_columns(run: RunRecord, runs: list[RunRecord]) -> dict:
    """The final point's compute as comparison.csv columns (``compute_*``)."""
    final = run_curve(run, runs)[-1]
    return {f"compute_{k}": final[k] for k in COLUMNS}


def curves(runs: list[RunRecord], by_seed: bool = False) -> dict[tuple, list[dict]]:
    """Each setting's curve, keyed (group, sweep), with its seeds averaged at the steps every seed recorded;
    ``by_seed``: one curve per training seed instead, keyed (group, sweep, seed)."""
    by_setting: dict[tuple, list[list[dict]]] = {}
    for run in runs:
        if run.is_policy:
            sweep = ";".join(f"{k}={v}" for k, v in run.sweep.items())
            key = (run.group, sweep, run.manifest.get("train_seed")) if by_seed else (run.group, sweep)
            by_setting.setdefault(key, []).append(run_curve(run, runs))
    out = {}
    for key, seeds in by_setting.items():
        steps = sorted(set.intersection(*(set(p["step"] for p in c) for c in seeds)))
        out[key] = [{"step": s, **{k: _mean([next(p[k] for p in c if p["step"] == s) for c in seeds])
                                   for k in ("gold", *COLUMNS)}} for s in steps]
    return out


def _mean(values: list) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def first_to_reach(by_seed: dict[tuple, list[dict]], axis: str = "flops") -> dict | None:
    """Which method reaches the common target gold reward with the least ``axis``, and whether that is
    decided (:data:`FIRST_RULE`); ``by_seed``: :func:`curves` with ``by_seed``. None with fewer than two
    methods, or when a method reaches the target only at points whose compute is unknown."""
    best: dict[tuple, float] = {}  # (group, seed): its best gold
    for (group, _, seed), points in by_seed.items():
        golds = [p["gold"] for p in points if p["gold"] is not None and p["step"] > 0]
        if golds:
            best[group, seed] = max(best.get((group, seed), -math.inf), max(golds))
    groups = sorted({g for g, _ in best})
    if len(groups) < 2:
        return None
    target = min(best.values())
    cost: dict[tuple, float] = {}
    for (group, _, seed), points in by_seed.items():
        reached = [p[axis] for p in points if p["step"] > 0 and p["gold"] is not None and p["gold"] >= target
                   and p[axis] is not None]
        if reached:
            cost[group, seed] = min(cost.get((group, seed), math.inf), min(reached))
    if set(cost) != set(best):
        # a method reached it only at points whose compute is unknown (runs recorded before it was)
        return None
    log_cost = {g: {seed: math.log(max(c, 1e-12)) for (h, seed), c in cost.items() if h == g} for g in groups}
    order = sorted(groups, key=lambda g: np.mean(list(log_cost[g].values())))
    return {"target": target, "axis": axis, "first": order[0], "runner_up": order[1],
            "cost": {g: float(np.exp(np.mean(list(log_cost[g].values())))) for g in order},
            **_ratio(log_cost[order[0]], log_cost[order[1]])}


def _ratio(first: dict, second: dict) -> dict:
    """How many times the leader's compute the runner-up needs, per paired seed, as a t interval (k - 1
    degrees of freedom) on the log ratios; decided when it excludes 1, never from one seed."""
    seeds = [s for s in first if s in second]
    logs = np.array([second[s] - first[s] for s in seeds])
    out = {"seeds": len(seeds), "ratio": float(np.exp(logs.mean())) if seeds else None,
           "ratio_low": None, "ratio_high": None, "decided": False, "seeds_needed": None}
    if len(seeds) >= 2:
        low, high, _ = t_bounds(logs, logs)
        out.update(ratio_low=float(np.exp(low)), ratio_high=float(np.exp(high)), decided=bool(low > 0),
                   seeds_needed=seeds_needed(float(logs.mean()), float(logs.std(ddof=1))))
    return out


def first_sentence(result: dict | None) -> str:
    """The report's sentence for :func:`first_to_reach`."""
    if result is None:
        return "Fewer than two methods with a known compute reach a common gold reward: nothing to order."
    unit = {"flops": "FLOPs", "wall_s": "wall seconds"}.get(result["axis"], result["axis"])
    costs = ", ".join(f"{g} {v:.3g}" for g, v in result["cost"].items())
    head = f"Gold reward {result['target']:.3f} (the highest every method reaches in every seed)"
    first, second = result["first"], result["runner_up"]
    if result["seeds"] < 2:
        return (f"{head}: least {unit} for {first} ({costs}), but which is first is inconclusive: one seed "
                f"each has no interval; what it would take: paired seeds (--seeds).")
    ratio = (f"{second} needs {result['ratio']:.2f} times {first}'s {unit} (95% interval "
             f"{result['ratio_low']:.2f}\u2013{result['ratio_high']:.2f}, {result['seeds']} paired seeds)")
    if result["decided"]:
        return f"{head} is reached first by {first}: {ratio}; {unit}: {costs}."
    need = result["seeds_needed"]
    return (f"{head}: which is first is inconclusive, {ratio}; what it would take: "
            f"{f'about {need}' if need else 'more'} paired seeds at this ratio and spread.")
