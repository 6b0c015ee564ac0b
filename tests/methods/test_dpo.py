"""DPO training moves the implicit reward the right way, with and without a reference model."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import make_workspace

from alignkit.losses import PreferenceLogps
from alignkit.methods.dpo import train_dpo
from alignkit.recipe import load_recipe
from alignkit.registry import LOSSES


def pairs_file(tmp_path):
    rows = [{"prompt": p, "chosen": " a wonderful and great film", "rejected": " a terrible and awful film"}
            for p in ("This movie is", "I think it was", "Overall", "The story is", "My verdict:",
                      "Honestly")]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("loss, extra", [("sigmoid", []), ("ipo", []), ("sigmoid",
                                                                        ["dpo.reference_free=true"])])
def test_dpo_learns_to_prefer_chosen(tmp_path, tiny_overrides, loss, extra):
    recipe = load_recipe(None, [*tiny_overrides, "method=dpo", f"preferences.source={pairs_file(tmp_path)}",
                                f"dpo.loss={loss}", "dpo.lr=0.003", "dpo.batch_size=6", "dpo.max_steps=15",
                                "dpo.warmup_steps=0", "dpo.log_every=1", *extra])
    ws = make_workspace(recipe, tmp_path)
    train_dpo(ws, recipe.method_config("dpo"))
    first, last = ws.ctx.log.records[0], ws.ctx.log.records[-1]
    assert last["rewards/margins"] > first["rewards/margins"] + 0.5
    assert last["rewards/accuracies"] == 1.0 and last["loss"] < first["loss"]
    if not extra:  # with a reference, the first step's implicit rewards start at exactly zero
        assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)


def test_hand_computed_loss_values():
    """margins: chosen ratio 1.0 - 0.0, rejected ratio -1.0 - 0.0 -> margin 2; beta 0.5 -> beta*m = 1.
    sigmoid: -log sigma(1) = 0.313262; hinge: max(0, 1 - 1) = 0; ipo with lengths 2 and 4:
    (1/2 - (-1/4) - 1/(2*0.5))^2 = (0.75 - 1)^2 = 0.0625; robust eps 0.1: (0.9*0.313262
    - 0.1*1.313262)/0.8."""
    logps = PreferenceLogps(torch.tensor([1.0]), torch.tensor([-1.0]), torch.tensor([0.0]),
                            torch.tensor([0.0]),
                            torch.tensor([2.0]), torch.tensor([4.0]))
    expected = {"sigmoid": 0.313262, "hinge": 0.0, "ipo": 0.0625,
                "robust": (0.9 * 0.313262 - 0.1 * 1.313262) / 0.8}
    for name, value in expected.items():
        extra = {"label_smoothing": 0.1} if name == "robust" else {}
        out = LOSSES.get(name)(logps, beta=0.5, **extra)
        assert out.losses.item() == pytest.approx(value, abs=1e-5), name
        assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == (0.5, -0.5)
