"""Hand-computed checks for the pure PPO math in ``alignkit.rl.ops``."""

import math

import pytest
import torch
from torch.testing import assert_close

from alignkit.rl.ops import (
    AdaptiveKLController,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae_advantages,
    masked_mean,
    masked_var,
    masked_whiten,
    token_rewards,
)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# --------------------------------------------------------------------------- GAE


def test_gae_hand_example_gamma_one_with_short_row():
    """Row 0 (full): r=[0,0,1], V=[.5,.6,.7], gamma=1, lam=.95, V after end = 0.
    deltas: d2 = 1 + 0 - .7 = .3, d1 = 0 + .7 - .6 = .1, d0 = 0 + .6 - .5 = .1
    A2 = .3, A1 = .1 + .95*.3 = .385, A0 = .1 + .95*.385 = .46575; returns = A + V.
    Row 1 (mask [1,1,0]) has garbage r=5, V=9 in the padded slot, which must not leak:
    d1 = 1 + 0 - .6 = .4, d0 = 0 + .6 - .5 = .1; A1 = .4, A0 = .1 + .95*.4 = .48; A2 = 0."""
    rewards = t([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = t([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95)
    assert_close(adv, t([[0.46575, 0.385, 0.3], [0.48, 0.4, 0.0]]))
    assert_close(ret, t([[0.96575, 0.985, 1.0], [0.98, 1.0, 0.0]]))


def test_gae_short_row_matches_unpadded_computation():
    """A padded row must give exactly the advantages of the same row without padding."""
    rewards, values = t([[0.3, -0.2, 1.0, 7.0, 7.0]]), t([[0.1, 0.4, 0.2, 3.0, -3.0]])
    mask = t([[1, 1, 1, 0, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.99, lam=0.9)
    adv_ref, ret_ref = gae_advantages(rewards[:, :3], values[:, :3], mask[:, :3], gamma=0.99, lam=0.9)
    assert_close(adv[:, :3], adv_ref)
    assert_close(ret[:, :3], ret_ref)
    assert torch.all(adv[:, 3:] == 0) and torch.all(ret[:, 3:] == 0)


def test_gae_gamma_below_one():
    """gamma=.9, lam=.5 (gamma*lam=.45), r=[1,0,2], V=[1,2,.5]:
    d2 = 2 - .5 = 1.5, d1 = 0 + .9*.5 - 2 = -1.55, d0 = 1 + .9*2 - 1 = 1.8
    A2 = 1.5, A1 = -1.55 + .45*1.5 = -.875, A0 = 1.8 + .45*(-.875) = 1.40625.
    With lam=1 returns are plain discounted returns: [1 + .81*2, .9*2, 2] = [2.62, 1.8, 2]."""
    rewards, values, mask = t([[1.0, 0.0, 2.0]]), t([[1.0, 2.0, 0.5]]), t([[1, 1, 1]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.5)
    assert_close(adv, t([[1.40625, -0.875, 1.5]]))
    assert_close(ret, t([[2.40625, 1.125, 2.0]]))
    _, ret_mc = gae_advantages(rewards, values, mask, gamma=0.9, lam=1.0)
    assert_close(ret_mc, t([[2.62, 1.8, 2.0]]))


# ----------------------------------------------------------------- policy loss


def _policy_example():
    # eps = 0.2, old_logprobs = 0 so ratio = exp(logprobs); last token is padding.
    ratios = t([[1.5, 0.5, 1.1, 0.9, 0.5, 1.5, 1.1]])
    adv = t([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0]])
    mask = t([[1, 1, 1, 1, 1, 1, 0]])
    logprobs = ratios.log().requires_grad_(True)
    return logprobs, torch.zeros_like(ratios), adv, mask, ratios


def test_clipped_policy_loss_value_and_stats():
    """Per token max(-A*r, -A*clip(r, .8, 1.2)) over the 6 real tokens:
    (A=+1,r=1.5) -> max(-1.5,-1.2) = -1.2 clipped;  (A=-1,r=.5) -> max(.5,.8) = .8 clipped;
    (+1,1.1) -> -1.1; (-1,.9) -> .9; (+1,.5) -> max(-.5,-.8) = -.5; (-1,1.5) -> max(1.5,1.2) = 1.5.
    loss = (-1.2+.8-1.1+.9-.5+1.5)/6 = .4/6; clipfrac = 2/6; approx_kl = mean(.5*log(r)^2)."""
    logprobs, old, adv, mask, ratios = _policy_example()
    loss, stats = clipped_policy_loss(logprobs, old, adv, mask, clip_range=0.2)
    assert_close(loss, t(0.4 / 6))
    assert_close(stats["clipfrac"], torch.tensor(1 / 3))
    logs = [math.log(r) for r in (1.5, 0.5, 1.1, 0.9, 0.5, 1.5)]
    assert_close(stats["approx_kl"], t(sum(0.5 * x * x for x in logs) / 6))
    assert not stats["clipfrac"].requires_grad and not stats["approx_kl"].requires_grad


def test_clipped_policy_gradient_zero_where_clip_binds():
    """d loss / d logp = -A*r/N on unclipped tokens (N=6) and exactly 0 where the clip binds
    (A>0 & r>1.2, A<0 & r<.8) or on padding. Ratios outside the range on the *other* side
    (A>0 & r=.5, A<0 & r=1.5) keep their gradient: -.5/6 and +1.5/6."""
    logprobs, old, adv, mask, _ = _policy_example()
    loss, _ = clipped_policy_loss(logprobs, old, adv, mask, clip_range=0.2)
    loss.backward()
    grad = logprobs.grad
    assert grad[0, 0] == 0 and grad[0, 1] == 0 and grad[0, 6] == 0
    assert torch.all(grad[0, 2:6] != 0)
    assert_close(grad, t([[0.0, 0.0, -1.1 / 6, 0.9 / 6, -0.5 / 6, 1.5 / 6, 0.0]]))


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    """At logp == old_logp the ratio is 1, nothing is clipped and loss = -mean(A) = -(1+2-3+6)/4 = -1.5."""
    adv, mask = t([[1.0, 2.0, -3.0], [6.0, 100.0, 100.0]]), t([[1, 1, 1], [1, 0, 0]])
    lp = t([[-1.0, -2.0, -0.5], [-0.3, -1.0, -1.0]])
    loss, stats = clipped_policy_loss(lp, lp.clone(), adv, mask, clip_range=0.2)
    assert_close(loss, t(-1.5))
    assert stats["clipfrac"] == 0 and stats["approx_kl"] == 0


# ------------------------------------------------------------------ value loss


def test_clipped_value_loss_known_numbers():
    """eps=.2, old=1 everywhere, last token is padding (v=100 ignored):
    v=1.5,R=2: clip->1.2, max(.25,.64)=.64 (clipped);  v=1.1,R=0: inside, 1.21 (not clipped, tie);
    v=.5,R=0: clip->.8, max(.25,.64)=.64 (clipped);   v=1.5,R=0: clip->1.2, max(2.25,1.44)=2.25.
    loss = .5 * (.64+1.21+.64+2.25)/4 = .5925; value_clipfrac = 2/4; grad is 0 on clipped tokens."""
    values = t([[1.5, 1.1, 0.5, 1.5, 100.0]]).requires_grad_(True)
    old, returns = torch.ones(1, 5, dtype=torch.float64), t([[2.0, 0.0, 0.0, 0.0, 0.0]])
    mask = t([[1, 1, 1, 1, 0]])
    loss, stats = clipped_value_loss(values, old, returns, mask, clip_range=0.2)
    assert_close(loss, t(0.5925))
    assert_close(stats["value_clipfrac"], torch.tensor(0.5))
    loss.backward()
    # d/dv of .5*(v-R)^2/4 = (v-R)/4 on unclipped tokens.
    assert_close(values.grad, t([[0.0, 1.1 / 4, 0.0, 1.5 / 4, 0.0]]))


# --------------------------------------------------------------- token rewards


def test_token_rewards_kl_everywhere_score_on_last_token():
    """kl_coef=.1, masks of lengths 3, 2, 4 and 1 (T=4):
    row0 kl = [-1+1.5, -2+1.5, 0, pad] = [.5,-.5,0,0] -> r = [-.05,.05,0+2,0]
    row1 kl = [.5,0,pad,pad]                      -> r = [-.05,0-1,0,0]
    row2 kl = 0, full length, score 3 on index 3  -> r = [0,0,0,3]
    row3 kl = [.2,pad,...], score .5 on index 0   -> r = [-.02+.5,0,0,0]
    Padded logprobs are garbage and must not appear anywhere."""
    logprobs = t([[-1.0, -2.0, -1.0, -9.0], [-0.5, -1.0, -3.0, -3.0], [-1.0] * 4, [-0.8, 5.0, 5.0, 5.0]])
    ref = t([[-1.5, -1.5, -1.0, 0.0], [-1.0, -1.0, -1.0, -1.0], [-1.0] * 4, [-1.0, 0.0, 0.0, 0.0]])
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    scores = t([2.0, -1.0, 3.0, 0.5])
    rewards, kl = token_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    assert_close(kl, t([[0.5, -0.5, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0], [0.0] * 4, [0.2, 0.0, 0.0, 0.0]]))
    expected = t([[-0.05, 0.05, 2.0, 0.0], [-0.05, -1.0, 0.0, 0.0], [0, 0, 0, 3.0], [0.48, 0, 0, 0]])
    assert_close(rewards, expected)
    # Total reward = score - kl_coef * sum(kl) per row.
    assert_close(rewards.sum(1), scores - 0.1 * kl.sum(1))


# ---------------------------------------------------------- masked statistics


def test_masked_mean_and_var_ignore_padding():
    """Real entries are 1..5 (mean 3, squared deviations sum 10): var = 10/4 = 2.5 unbiased, 2.0 biased.
    Row means along dim=1: [2, 4.5]. Replacing padded values changes nothing."""
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]])
    a = t([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 99.0, 99.0]])
    b = t([[1.0, 2.0, 3.0, -7.0], [4.0, 5.0, 1e6, 0.0]])
    for x in (a, b):
        assert_close(masked_mean(x, mask), t(3.0))
        assert_close(masked_mean(x, mask, dim=1), t([2.0, 4.5]))
        assert_close(masked_var(x, mask), t(2.5))
        assert_close(masked_var(x, mask, unbiased=False), t(2.0))
    assert torch.equal(masked_whiten(a, mask), masked_whiten(b, mask))


def test_masked_whiten_statistics():
    """Whitened real entries are (x-3)/sqrt(2.5) (mean 0, unbiased var 1); padding comes back 0.
    With shift_mean=False the original mean 3 is added back."""
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]])
    x = t([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 99.0, 99.0]])
    w = masked_whiten(x, mask)
    s = math.sqrt(2.5)
    assert_close(w, t([[-2 / s, -1 / s, 0.0, 0.0], [1 / s, 2 / s, 0.0, 0.0]]))
    assert_close(masked_mean(w, mask), t(0.0))
    assert_close(masked_var(w, mask), t(1.0))
    w2 = masked_whiten(x, mask, shift_mean=False)
    assert_close(masked_mean(w2, mask), t(3.0))
    assert_close(masked_var(w2, mask), t(1.0))
    assert torch.all(w2[mask == 0] == 0)


# ------------------------------------------------------------ KL controller


def test_adaptive_kl_controller():
    """init .2, target 6, horizon 10000, n_steps 256 (256/10000 = .0256):
    kl=9 -> error .5 clipped to .2 -> .2*(1+.2*.0256) = .201024
    kl=3 -> error -.5 clipped to -.2 -> .2*(1-.00512) = .198976
    kl=6.6 -> error .1 (unclipped) -> .2*(1+.00256) = .200512; target None -> stays .2."""
    cases = {9.0: 0.201024, 3.0: 0.198976, 6.6: 0.200512}
    for kl, expected in cases.items():
        ctl = AdaptiveKLController(0.2, target_kl=6.0, horizon=10000)
        ctl.update(kl, n_steps=256)
        assert ctl.value == pytest.approx(expected, rel=1e-12)
    assert AdaptiveKLController(0.2, 6.0, 10000).value == 0.2
    up, down = AdaptiveKLController(0.2, 6.0, 10000), AdaptiveKLController(0.2, 6.0, 10000)
    up.update(12.0, 1000)
    down.update(1.0, 1000)
    assert up.value > 0.2 > down.value
    fixed = AdaptiveKLController(0.2, target_kl=None, horizon=10000)
    fixed.update(100.0, n_steps=256)
    assert fixed.value == 0.2


# ------------------------------------------------------------------ entropy


def test_entropy_from_logits():
    """Uniform logits (any constant) over V give log V; p = [.25, .75] gives
    -(.25 ln .25 + .75 ln .75) = 0.5623351446; a near one-hot distribution gives ~0."""
    for v in (2, 7, 50000):
        ent = entropy_from_logits(torch.full((2, 3, v), 5.0, dtype=torch.float64))
        assert ent.shape == (2, 3)
        assert_close(ent, torch.full((2, 3), math.log(v), dtype=torch.float64))
    assert_close(entropy_from_logits(t([math.log(0.25), math.log(0.75)])), t(0.5623351446188083))
    assert entropy_from_logits(t([[1000.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-12)
