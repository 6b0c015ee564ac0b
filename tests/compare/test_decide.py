"""`alignkit compare --decide` (alignkit.compare.decide): the comparison rerun with more paired seeds at the
looks of a fixed schedule, each look's verdicts at its share of 0.05, stopping when every pair is decided or
the budget is spent."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

import alignkit.compare.decide as decide
import alignkit.compare.look_additions as look_additions
import alignkit.report.build as build
from alignkit.cli import main
from alignkit.compare.decide import parse_duration, schedule
from alignkit.compare.until_converged import UntilConverged
from alignkit.errors import AlignkitError
from alignkit.eval.verdict import LOOKS, look_alpha

FAST = ["eval.every_steps=2", "eval.temperatures=[]", "eval.n_prompts=16", "dpo.max_steps=4",
        "dpo.batch_size=8"]


def test_the_looks_share_five_percent_little_of_it_early():
    shares = [look_alpha(k) for k in LOOKS]
    assert sum(shares) == pytest.approx(0.05) and shares == sorted(shares) and shares[0] < 1e-3
    assert schedule(None) == [2, 3, 5, 8] and schedule(4) == [5, 8]
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90 and parse_duration("12") == 12
    with pytest.raises(AlignkitError, match="--budget soon"):
        parse_duration("soon")


def test_decide_adds_a_seed_trains_on_open_runs_and_stops_at_the_budget(tmp_path, compare_overrides,
                                                                       monkeypatch):
    """Runs are labelled still improving until trained on a round; with a margin of 10 the pair is then
    "within +-10, but runs could improve", so look 2 trains those runs on (and adds a seed)."""
    monkeypatch.setattr(build, "convergence_of", lambda run: {
        "label": "converged" if ".round" in run.run_dir.name else "still improving"})
    out = tmp_path / "out"
    args = [a for o in [*compare_overrides, *FAST] for a in ("--set", o)]
    result = CliRunner().invoke(main, ["compare", "dpo", "ipo=dpo:loss=ipo", "--decide", "--budget", "1s",
                                       "--margin", "10", "--out", str(out), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "decide.json").read_text())
    first, second = record["looks"]
    asked = first["verdicts"][0]["needs"]["extend"]
    assert first["verdicts"][0]["answer"] == "inconclusive: within \u00b110, but runs could improve" and asked
    assert [e["run"] for e in second["extend"]] == asked and {e["round"] for e in second["extend"]} == {1}
    index = json.loads((out / "compare.json").read_text())
    folders = {e["label"]: e["run"] for e in index["entries"]}
    for run in asked:  # resumed from where the run stopped, and the report reads the new round
        manifest = json.loads((out / "runs" / f"{run}.round1" / "manifest.json").read_text())
        assert manifest["resumed"][-1]["from_step"] == 4 and folders[run] == f"{run}.round1"
    assert f"trained on {asked[0]} to round 1" in result.output
    assert [look["seeds"] for look in record["looks"]] == [2, 3]
    assert [look["alpha"] for look in record["looks"]] == [look_alpha(2), look_alpha(3)]
    assert sorted(first["added"]) == ["dpo#seed0", "dpo#seed1", "ipo#seed0", "ipo#seed1"]
    assert second["added"] == ["dpo#seed2", "ipo#seed2"] and "budget (1s) was spent" in record["stopped"]
    index = json.loads((out / "compare.json").read_text())
    states = {e["label"]: e["state"] for e in index["entries"]}
    assert states == {"dpo#seed0": "current", "dpo#seed1": "current", "dpo#seed2": "train",
                      "ipo#seed0": "current", "ipo#seed1": "current", "ipo#seed2": "train"}
    assert index["alpha"] == look_alpha(3) and "--decide" in index["argv"] and "--budget 1s" in index["argv"]
    assert index["matched_kl"][0]["result"]["units"] == 3
    assert "decide: look at 3 seeds" in result.output and "added dpo#seed2, ipo#seed2" in result.output
    assert "## Decide" in (out / "report.md").read_text()


def scripted(looks: list[list[dict]], calls: list[dict]):
    """A stand-in for run_comparison that records what each look planned and answers the scripted verdicts."""
    def run(plan, *, alpha, writer, folders):
        calls.append({"alpha": alpha, "folders": {k: v.name for k, v in folders.items()},
                      "beta": {e.label: e.recipe.method_config("dpo").beta for e in plan.entries
                               if e.method == "dpo"}})
        plan.out.mkdir(parents=True, exist_ok=True)
        (plan.out / "report.md").write_text("# report\n")
        time.sleep(0.25)  # each look takes a measurable time, so the budget runs out at the third
        return {"matched_kl": [{"a": a, "b": b, "verdict": "inconclusive", "answer": "inconclusive",
                                "would_take": f"what {a} vs {b} needs", "needs": needs, "result": None}
                               for a, b, needs in looks[len(calls) - 1]]}
    return run


def test_looks_add_the_setting_and_the_round_the_last_look_asked_for(tmp_path, compare_overrides,
                                                                     monkeypatch, capsys):
    def setting(value, base):
        return {"setting": {"group": "dpo", "key": "dpo.beta", "value": value, "from": base, "kl": 9.0}}
    extend = {"extend": ["best_of_n#seed0", "ppo#seed0"]}
    looks = [[("dpo", "ppo", setting(0.05, {})), ("best_of_n", "ppo", extend)],
             [("dpo", "ppo", setting(0.025, {"dpo.beta": 0.05})), ("best_of_n", "ppo", extend)],
             [("dpo", "ppo", setting(0.0125, {"dpo.beta": 0.025})), ("best_of_n", "ppo", extend)]]
    calls, rounds_run = [], []
    monkeypatch.setattr(decide, "run_comparison", scripted(looks, calls))

    def run_round(plan, todo, current, budgets, cfg, cache_dir, runtime, what):
        rounds_run.append([(entry.label, round_, budgets[entry.label]) for entry, round_ in todo])
        current.update({e.label: plan.out / "runs" / f"{e.label}.round{r}" for e, r in todo})
        return {}
    monkeypatch.setattr(look_additions, "run_round", run_round)
    monkeypatch.setattr(look_additions, "first_budget", lambda entry, run_dir: 4)
    monkeypatch.setattr(look_additions, "start", lambda device, precision: None)
    out = tmp_path / "out"
    plan = decide.decide_comparison(["dpo", "ppo", "best_of_n"], budget="0.4s", out=out, argv=["alignkit"],
                                    overrides=compare_overrides)
    assert [c["alpha"] for c in calls] == [look_alpha(2), look_alpha(3), look_alpha(5)]
    # look 2 trains the setting look 1 asked for at 3 seeds, look 3 the next one past it (and the first at 5)
    assert {k: v for k, v in calls[1]["beta"].items() if "@" in k} == {f"dpo@beta=0.05#seed{s}": 0.05
                                                                      for s in range(3)}
    assert sorted(k for k, v in calls[2]["beta"].items() if v == 0.025) == [f"dpo@beta=0.025#seed{s}"
                                                                           for s in range(5)]
    assert len([k for k, v in calls[2]["beta"].items() if v == 0.05]) == 5
    # one round a look for the threatening run, read from its newest round; Best-of-N is not extended
    assert rounds_run == [[("ppo#seed0", 1, 4)], [("ppo#seed0", 2, 4)]]
    assert [c["folders"] for c in calls] == [{}, {"ppo#seed0": "ppo#seed0.round1"},
                                             {"ppo#seed0": "ppo#seed0.round2"}]
    record = json.loads((out / "decide.json").read_text())
    first, second, third = record["looks"]
    assert first["settings"] == first["extend"] == first["not_added"] == []
    assert second["settings"] == [{**setting(0.05, {})["setting"], "pair": "dpo vs ppo",
                                   "why": "what dpo vs ppo needs"}]
    assert second["extend"] == [{"run": "ppo#seed0", "round": 1, "pair": "best_of_n vs ppo",
                                 "why": "what best_of_n vs ppo needs", "folder": "ppo#seed0.round1"}]
    assert second["not_added"] == [{"run": "best_of_n#seed0", "because": "best_of_n runs are not extended",
                                    "pair": "best_of_n vs ppo", "why": "what best_of_n vs ppo needs"}]
    assert sorted(second["added"]) == ["best_of_n#seed2", "dpo#seed2", *(f"dpo@beta=0.05#seed{s}"
                                                                         for s in range(3)), "ppo#seed2"]
    assert third["settings"][0]["value"] == 0.025 and third["extend"][0]["round"] == 2
    assert record["stopped"] == "the budget (0.4s) was spent"
    assert record["next_look_would_add"]["settings"][0]["value"] == 0.0125
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("decide: look")]
    assert len(printed) == 3
    assert "setting dpo beta=0.05 (dpo vs ppo: dpo's points end below 9 nats)" in printed[1]
    assert "trained on ppo#seed0 to round 1 (best_of_n vs ppo" in printed[1]
    assert "cannot add a round of best_of_n#seed0: best_of_n runs are not extended" in printed[1]
    section = (out / "report.md").read_text().split("## Decide")[1]
    assert "setting dpo beta=0.025" in section and "trained on ppo#seed0 to round 2" in section
    # a run trained on its last round is not extended again, and says so
    verdicts = [{"a": "best_of_n", "b": "ppo", "verdict": "inconclusive", "would_take": "w",
                 "needs": {"extend": ["ppo#seed0"]}}]
    capped = look_additions.next_additions(verdicts, plan, {"ppo#seed0": 3}, UntilConverged(max_rounds=3))
    assert capped["extend"] == [] and "3 rounds already" in capped["not_added"][0]["because"]
