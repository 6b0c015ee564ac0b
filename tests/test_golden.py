"""Pinned loss trajectories: the first logged losses of DPO, PPO and the reward model on the tiny fixture
model must not move. A refactor that shifts results by any amount beyond float noise fails here, even when
two fresh runs still agree with each other (which is all ``test_determinism`` can see).

The pinned values live in ``tests/golden/<case>.json``. To re-pin them after a change that is *meant* to move
results, run ``ALIGNKIT_REPIN_GOLDEN=1 python -m pytest tests/test_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from alignkit.cli import main

GOLDEN = Path(__file__).parent / "golden"
RTOL = 1e-5  # same machine, same library versions: equal to float noise
# float32 noise on small differences of log-prob sums (a margin or a KL of ~1e-3 from sums of ~50): a patch
# release of a dependency moved DPO's margin by 2e-7 and PPO's KL by 3e-7 (2026-12-06); any real change in a
# loss or update moves these by orders of magnitude more
ATOL = 1e-6

CASES = {
    "dpo": ("dpo_imdb", ["dpo.max_steps=6", "dpo.batch_size=8", "dpo.log_every=1", "dpo.warmup_steps=2"],
            "dpo", ("loss", "rewards/margins", "grad_norm")),
    "reward_model": ("rm_imdb", ["reward_model.max_steps=6", "reward_model.batch_size=2",
                                 "reward_model.log_every=1", "reward_model.warmup_steps=2"],
                     "reward_model", ("loss", "accuracy", "grad_norm")),
    "ppo": ("ppo_imdb", ["ppo.steps=3", "ppo.rollout_size=8", "ppo.minibatch_size=4", "ppo.max_new_tokens=8",
                         "ppo.prompt_pool=32", "ppo.target_kl=6", "reward_model.max_steps=4"],
            "ppo", ("loss/policy", "loss/value", "reward/proxy", "kl", "kl_coef")),
}


def logged(run_dir: Path, stage: str, keys: tuple[str, ...]) -> list[dict]:
    records = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    return [{"step": r["step"],
             **{k: r[k] for k in keys if k in r}} for r in records if r.get("stage") == stage]


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_logged_losses_are_pinned(case, tmp_path, tiny_overrides):
    recipe, sets, stage, keys = CASES[case]
    args = ["run", recipe, "--out", str(tmp_path / case), "--set", "eval.every_steps=0", "--set",
            "eval.temperatures=[]"]
    for item in tiny_overrides + sets:
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    got = logged(tmp_path / case, stage, keys)
    assert len(got) >= 3, got
    path = GOLDEN / f"{case}.json"
    if os.environ.get("ALIGNKIT_REPIN_GOLDEN"):
        path.write_text(json.dumps(got, indent=1) + "\n")
    pinned = json.loads(path.read_text())
    assert [r["step"] for r in got] == [r["step"] for r in pinned]
    for mine, theirs in zip(got, pinned):
        assert set(mine) == set(theirs), (mine, theirs)
        for key in keys:
            if key in theirs:
                assert math.isclose(mine[key], theirs[key], rel_tol=RTOL, abs_tol=ATOL), \
                    f"{case} step {mine['step']} {key}: {mine[key]!r} != pinned {theirs[key]!r}"
