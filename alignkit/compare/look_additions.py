"""What a look of ``compare --decide`` adds besides its seeds, read from the previous look's undecided
verdicts (their ``needs``, :func:`alignkit.eval.verdict.decide`): a setting past a method's sweep where its
points end below the matched KL, and one more round of training for a run that could still improve there.

At most one new setting per method a look (the first pair's that asks), added as runs of the method's
highest-KL sweep point with its KL knob moved (:mod:`alignkit.eval.kl_knob`), at the look's seeds; a run is
extended a round at a time with the ``--until-converged`` machinery, at most its ``max_rounds``, resumed from
its last training state (every extendable run keeps it, as under ``--until-converged``). What a
verdict asks for but cannot be added is named with why (no KL setting, a method whose runs are not extended,
the rounds used up).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from alignkit.compare.plan import ComparisonPlan, expand
from alignkit.compare.until_converged import (
    UntilConverged,
    first_budget,
    keep_final_state,
    not_extendable,
    run_round,
)
from alignkit.errors import AlignkitError
from alignkit.recipe import recipe_from_data
from alignkit.runtime import start

DECIDED = ("winner", "equivalent")


def next_additions(verdicts: list[dict], plan: ComparisonPlan, rounds: dict[str, int],
                   cfg: UntilConverged) -> dict:
    """From a look's verdicts: ``settings`` and ``extend`` (each with the pair that asked and its words) for
    the next look, and ``not_added`` (what was asked, and why it cannot be); ``rounds``: each run's rounds so
    far."""
    entries = {e.label: e for e in plan.entries}
    settings, extend, not_added = [], {}, []
    for v in (v for v in verdicts if v["verdict"] not in DECIDED):
        asked = {"pair": f"{v['a']} vs {v['b']}", "why": v["would_take"]}
        needs = v.get("needs") or {}
        setting = needs.get("setting")
        if setting and all(s["group"] != setting["group"] for s in settings):
            settings.append({**setting, **asked})
        if "no_setting" in needs:
            not_added.append({"setting": needs["points"], "because": needs["no_setting"], **asked})
        for label in needs.get("extend", []):
            entry = entries.get(label)
            because = not_extendable(entry) if entry else "not a run of this comparison"
            if because is None and rounds.get(label, 0) >= cfg.max_rounds:
                because = f"trained on {cfg.max_rounds} rounds already (until_converged.max_rounds)"
            if because is None and label not in extend:
                extend[label] = {"run": label, "round": rounds.get(label, 0) + 1, **asked}
            elif because is not None and all(n.get("run") != label for n in not_added):
                not_added.append({"run": label, "because": because, **asked})
    return {"settings": settings, "extend": list(extend.values()), "not_added": not_added}


def with_settings(plan: ComparisonPlan, settings: list[dict], seeds: int) -> ComparisonPlan:
    """The plan with each added setting's runs (its ``from`` sweep point with ``key`` set to ``value``, at
    ``seeds`` paired seeds), in the order added (a setting may start from an earlier one)."""
    entries = list(plan.entries)
    for setting in settings:
        base = next((e for e in entries if e.group == setting["group"] and e.sweep == setting["from"]), None)
        if base is None:
            raise AlignkitError(f"compare --decide: no run of {setting['group']} at {setting['from']} to add "
                                f"{setting['key']}={setting['value']} to")
        sweep = {**setting["from"], setting["key"]: setting["value"]}
        for run in expand([(setting["group"], base.raw, {k: [v] for k, v in sweep.items()})], seeds):
            run.raw["name"] = run.label
            run.recipe = recipe_from_data(run.raw, f"compare entry {run.label}", Path.cwd())
            entries.append(run)
    return dataclasses.replace(plan, entries=entries)


def keep_final_states(plan: ComparisonPlan) -> ComparisonPlan:
    """The plan with every run that could be extended keeping its last training state, so a round resumes
    it (as under ``--until-converged``; a finished run is reused all the same)."""
    for entry in plan.entries:
        if not_extendable(entry) is None:
            keep_final_state(entry)
    return plan


def extend_runs(plan: ComparisonPlan, todo: list[dict], current: dict[str, Path], rounds: dict[str, int],
                budgets: dict[str, int], cfg: UntilConverged) -> None:
    """One round more for each run of ``todo`` (:func:`next_additions`' ``extend``): ``current`` moves to its
    new folder and ``rounds`` counts it; a round that failed is marked ``failed`` in ``todo`` (its run
    stays at its last round)."""
    if not todo:
        return
    entries, runs = {e.label: e for e in plan.entries}, plan.out / "runs"
    for item in todo:
        current.setdefault(item["run"], runs / item["run"])
        budgets.setdefault(item["run"], first_budget(entries[item["run"]], runs / item["run"]))
    first = plan.entries[0].recipe
    failed = run_round(plan, [(entries[t["run"]], t["round"]) for t in todo], current, budgets, cfg, None,
                       start(first.device, first.precision), "decide: trained on")
    for item in todo:
        if item["run"] in failed:
            item["failed"] = failed[item["run"]][1]
        else:
            rounds[item["run"]] = item["round"]
            item["folder"] = current[item["run"]].name
