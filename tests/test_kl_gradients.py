"""Exact expected gradients of every KL estimator x placement, by enumeration in float64.

The surrogate for each sampled y is built with the same functions the trainer calls
(rlplug.components.kl_placement and the registered estimators), and its expectation is taken exactly:
grad sum_y sg(pi(y)) L(y) = E_y[grad L(y)]. Truth: autograd of the exact KL.
"""

import itertools

import pytest
import torch

from rlplug import KLSpec, Rollout, get_registry
from rlplug.components.kl_placement import KLConfigError, check_kl_spec, loss_kl_term, reward_kl_token_rewards

V = 6


def f64(values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _float64_default():
    """Every intermediate tensor in these tests is float64; restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def estimator(name):
    return get_registry().get("kl_estimators", name)


def surrogate(spec, logps, ref_logps, mask):
    """Per-sequence surrogate loss L (B,) whose gradient the trainer follows for the KL."""
    est = estimator(spec.estimator)
    old_logps = logps.detach()
    if spec.placement == "loss":
        return loss_kl_term(spec, est, logps, old_logps, ref_logps, mask).sum(-1)
    token_rewards = reward_kl_token_rewards(spec, est, old_logps, ref_logps, mask)
    rollout = Rollout(rewards=torch.zeros(logps.shape[0]), group_ids=torch.arange(logps.shape[0]),
                      completion_mask=mask, token_rewards=token_rewards)
    advantages = rollout.sequence_rewards()
    return -(advantages * (logps * mask).sum(-1))


def relative_error(estimate, truth):
    return ((estimate - truth).norm() / truth.norm()).item()


# ---- single token -------------------------------------------------------------------------

REFERENCE = torch.log_softmax(f64([0.3, -1.2, 0.8, 0.0, -0.4, 1.1]), -1)
DIRECTION = f64([1.0, -0.5, 0.2, -1.3, 0.9, 0.4])
DISTANCES = {"near": 0.1, "moderate": 1.0, "far": 3.0}


def single_token_gradients(spec, distance):
    theta = (REFERENCE + distance * DIRECTION).clone().requires_grad_()
    logps = torch.log_softmax(theta, -1)
    truth = torch.autograd.grad((logps.exp() * (logps - REFERENCE)).sum(), theta)[0]
    theta_again = theta.detach().clone().requires_grad_()
    logps = torch.log_softmax(theta_again, -1)
    per_sample = surrogate(spec, logps.view(V, 1), REFERENCE.view(V, 1), torch.ones(V, 1))
    estimate = torch.autograd.grad((logps.exp().detach() * per_sample).sum(), theta_again)[0]
    return estimate, truth


UNBIASED = [
    KLSpec("k1", "reward", 1.0),
    KLSpec("k1_straight_through", "reward", 1.0),
    KLSpec("k2", "loss", 1.0, importance_ratio=False),
    KLSpec("k2", "loss", 1.0, importance_ratio=True),
    KLSpec("k3", "loss", 1.0, importance_ratio=True),
    KLSpec("k1", "loss", 1.0, importance_ratio=True),
    KLSpec("k1_straight_through", "loss", 1.0),
    KLSpec("k3_straight_through", "loss", 1.0),
]
BIASED = [
    KLSpec("k2", "reward", 1.0),
    KLSpec("k3", "reward", 1.0),
    KLSpec("k3", "loss", 1.0, importance_ratio=False),
    KLSpec("k3_straight_through", "reward", 1.0),
]


@pytest.mark.parametrize("distance", DISTANCES.values(), ids=DISTANCES.keys())
@pytest.mark.parametrize("spec", UNBIASED, ids=lambda s: f"{s.estimator}-{s.placement}-ratio{s.importance_ratio}")
def test_unbiased_single_token(spec, distance):
    estimate, truth = single_token_gradients(spec, distance)
    assert relative_error(estimate, truth) < 1e-9


@pytest.mark.parametrize("distance", DISTANCES.values(), ids=DISTANCES.keys())
@pytest.mark.parametrize("spec", BIASED, ids=lambda s: f"{s.estimator}-{s.placement}-ratio{s.importance_ratio}")
def test_biased_single_token_is_visibly_wrong(spec, distance):
    estimate, truth = single_token_gradients(spec, distance)
    assert relative_error(estimate, truth) > 1e-3


def test_k1_in_the_loss_without_ratio_has_zero_gradient_and_is_refused():
    spec = KLSpec("k1", "loss", 1.0, importance_ratio=False)
    estimate, truth = single_token_gradients(spec, 1.0)
    assert estimate.abs().max().item() < 1e-12 and truth.abs().max().item() > 0.1
    with pytest.raises(KLConfigError, match="k1 in the loss without the importance ratio"):
        check_kl_spec(spec)


@pytest.mark.parametrize("distance", DISTANCES.values(), ids=DISTANCES.keys())
def test_k1_in_the_loss_with_ratio_is_exact_per_token_and_allowed(distance, recwarn):
    """grad(rho * k1) = rho * (k1 + 1) * s and E[s] = 0: the ratio form is unbiased, so only the ratio-free form is refused."""
    spec = KLSpec("k1", "loss", 1.0, importance_ratio=True)
    estimate, truth = single_token_gradients(spec, distance)
    assert relative_error(estimate, truth) < 1e-9
    check_kl_spec(spec)
    assert not [w for w in recwarn if "kl:" in str(w.message)]


@pytest.mark.parametrize("spec", BIASED, ids=lambda s: f"{s.estimator}-{s.placement}-ratio{s.importance_ratio}")
def test_biased_combinations_warn(spec):
    with pytest.warns(UserWarning, match=spec.estimator):
        check_kl_spec(spec)


@pytest.mark.parametrize("spec", [s for s in UNBIASED if not s.estimator.endswith("straight_through")],
                         ids=lambda s: f"{s.estimator}-{s.placement}")
def test_unbiased_combinations_are_quiet(spec, recwarn):
    check_kl_spec(spec)
    assert not [w for w in recwarn if "kl:" in str(w.message)]


def test_off_policy_loss_kl_without_weight_warns():
    with pytest.warns(UserWarning, match="off-policy"):
        check_kl_spec(KLSpec("k2", "loss", 0.1, importance_ratio=False), off_policy=True)


# ---- two steps ----------------------------------------------------------------------------

W = 4
REF1 = torch.log_softmax(f64([0.2, -0.3, 0.5, 0.0]), -1)
REF2 = torch.log_softmax(f64([[0.1, 0.4, -0.2, 0.3], [0.0, -0.6, 0.2, 0.5],
                                        [0.7, 0.1, -0.1, 0.0], [-0.3, 0.2, 0.6, -0.5]]), -1)
SEQUENCES = torch.tensor(list(itertools.product(range(W), repeat=2)))


def sequence_logps(theta1, theta2):
    logp1 = torch.log_softmax(theta1, -1)
    logp2 = torch.log_softmax(theta2, -1)
    y1, y2 = SEQUENCES[:, 0], SEQUENCES[:, 1]
    per_token = torch.stack([logp1[y1], logp2[y1, y2]], -1)
    ref = torch.stack([REF1[y1], REF2[y1, y2]], -1)
    return per_token, ref


def exact_sequence_kl(theta1, theta2):
    per_token, ref = sequence_logps(theta1, theta2)
    return (per_token.sum(-1).exp() * (per_token - ref).sum(-1)).sum()


def two_step_gradients(spec, theta1, theta2):
    t1, t2 = theta1.clone().requires_grad_(), theta2.clone().requires_grad_()
    truth = torch.autograd.grad(exact_sequence_kl(t1, t2), (t1, t2))
    t1, t2 = theta1.clone().requires_grad_(), theta2.clone().requires_grad_()
    per_token, ref = sequence_logps(t1, t2)
    weights = per_token.sum(-1).exp().detach()
    estimate = torch.autograd.grad((weights * surrogate(spec, per_token, ref, torch.ones_like(per_token))).sum(), (t1, t2))
    return estimate, truth


GENERIC = (REF1 + f64([0.8, -0.4, 0.1, 0.3]), REF2 + f64([[1.0, -1.0, 0.5, 0.0]] * W))
# pi1 equals ref1, but after prefixes 0 and 2 the second step is far from ref2.
PREFIX_STEERING = (REF1.clone(), REF2 + f64([[3.0, -2.0, 0.0, 1.0], [0.0] * 4, [-2.0, 2.5, 1.0, 0.0], [0.0] * 4]))
CASES = {"generic": GENERIC, "prefix_steering": PREFIX_STEERING}
EXACT_FOR_SEQUENCES = [
    KLSpec("k1", "reward", 1.0),
    KLSpec("k3", "loss", 1.0, importance_ratio=True, future_kl_correction=True),
    KLSpec("k2", "loss", 1.0, future_kl_correction=True),
]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("spec", EXACT_FOR_SEQUENCES, ids=lambda s: f"{s.estimator}-{s.placement}")
def test_exact_sequence_forms(spec, case):
    estimate, truth = two_step_gradients(spec, *case)
    for block_estimate, block_truth in zip(estimate, truth):
        assert relative_error(block_estimate, block_truth) < 1e-9


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("estimator_name", ["k3", "k2"])
def test_per_token_loss_without_correction_misses_the_prefix_block(estimator_name, case):
    spec = KLSpec(estimator_name, "loss", 1.0, importance_ratio=True, future_kl_correction=False)
    (estimate1, estimate2), (truth1, truth2) = two_step_gradients(spec, *case)
    assert relative_error(estimate2, truth2) < 1e-9  # the last token has no future
    assert relative_error(estimate1, truth1) > 1e-3


def test_prefix_steering_first_block_is_entirely_missed_without_correction():
    spec = KLSpec("k3", "loss", 1.0, importance_ratio=True, future_kl_correction=False)
    (estimate1, _), (truth1, _) = two_step_gradients(spec, *PREFIX_STEERING)
    assert estimate1.abs().max().item() < 1e-12  # pi1 == ref1: the per-token term sees nothing
    assert truth1.abs().max().item() > 0.05


# ---- dynamics: following the exact gradient reaches pi* ~ ref * exp(R / beta) ---------------

REWARD = f64([[1.0, 0.0, 0.5, 0.2], [0.0, 2.0, 0.0, 0.1], [0.3, 0.3, 1.5, 0.0], [0.0, 0.8, 0.0, 1.2]]).flatten()
BETA = 0.5


def optimum_distance(spec, steps=1500, lr=1.0):
    theta1, theta2 = REF1.clone().requires_grad_(), REF2.clone().requires_grad_()
    optimizer = torch.optim.SGD([theta1, theta2], lr=lr)
    for _ in range(steps):
        per_token, ref = sequence_logps(theta1, theta2)
        weights = per_token.sum(-1).exp().detach()
        reward_term = -(REWARD * per_token.sum(-1))
        loss = (weights * (reward_term + surrogate(spec, per_token, ref, torch.ones_like(per_token)))).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        per_token, ref = sequence_logps(theta1, theta2)
        log_target = torch.log_softmax(ref.sum(-1) + REWARD / BETA, -1)
        log_policy = per_token.sum(-1)
        return (log_policy.exp() * (log_policy - log_target)).sum().item()


@pytest.mark.parametrize("spec", [KLSpec("k1", "reward", BETA),
                                  KLSpec("k3", "loss", BETA, importance_ratio=True, future_kl_correction=True)],
                         ids=["k1-reward", "k3-ratio-loss-corrected"])
def test_exact_forms_reach_the_regularized_optimum(spec):
    assert optimum_distance(spec) < 1e-4


def test_k3_in_the_loss_without_ratio_misses_the_optimum():
    assert optimum_distance(KLSpec("k3", "loss", BETA, importance_ratio=False, future_kl_correction=True)) > 1e-3


# ---- three steps, vocabulary 3, prefix-dependent policies, variable lengths with padding ------
#
# Token 2 ends a sequence (EOS); positions after it are padding (mask 0) whose log-probs are
# real, differentiable and far from the reference, as in a trainer, so a term that forgets the
# mask is caught. Every context (prefix) has its own logits; the last row is the padding context.

from dataclasses import replace as _replace  # noqa: E402

from rlplug.components import kl_placement  # noqa: E402
from rlplug.components.kl_placement import kl_guard_messages  # noqa: E402
from rlplug.components.stats import reverse_cumsum  # noqa: E402

T3, V3, EOS = 3, 3, 2
CONTEXTS = [()] + [(a,) for a in (0, 1)] + [(a, b) for a in (0, 1) for b in (0, 1)]
PAD_ROW = len(CONTEXTS)
PADDED = []
for _tokens in itertools.product(range(V3), repeat=T3):
    _cut = _tokens.index(EOS) + 1 if EOS in _tokens else T3
    if _tokens[:_cut] not in [p[: len(p)] for p in PADDED]:
        PADDED.append(_tokens[:_cut])
LENGTHS = torch.tensor([len(p) for p in PADDED])
TOKENS = torch.tensor([list(p) + [0] * (T3 - len(p)) for p in PADDED])
ROWS = torch.tensor([[CONTEXTS.index(p[:t]) if t < len(p) else PAD_ROW for t in range(T3)] for p in PADDED])
MASK3 = (torch.arange(T3) < LENGTHS[:, None]).to(torch.float64)

_g = torch.Generator().manual_seed(3)
REF3 = torch.log_softmax(torch.randn(PAD_ROW + 1, V3, generator=_g, dtype=torch.float64), -1)
THETA3 = REF3 + torch.randn(PAD_ROW + 1, V3, generator=_g, dtype=torch.float64)  # policy, off the reference
THETA3[0] = REF3[0]  # first token at the reference: only the future term moves its block
THETA3[PAD_ROW] = REF3[PAD_ROW] + torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
SAMPLER3 = THETA3 + 0.7 * torch.randn(PAD_ROW + 1, V3, generator=_g, dtype=torch.float64)  # pi_old != pi


def padded_logps(theta):
    """(N, T3) log-probs of the tokens of every sequence, padding included."""
    return torch.log_softmax(theta, -1)[ROWS, TOKENS]


def exact_sequence_kl3(theta):
    logps, ref = padded_logps(theta), REF3[ROWS, TOKENS]
    return ((logps * MASK3).sum(-1).exp() * ((logps - ref) * MASK3).sum(-1)).sum()


def exact_per_token_kl3(theta):
    """sum_t E_prefix[KL(pi(.|prefix) || ref(.|prefix))], prefix weights held fixed: the partial gradient."""
    logps = padded_logps(theta)
    weights = (logps * MASK3).sum(-1).exp().detach()
    table = torch.log_softmax(theta, -1)
    context_kl = (table.exp() * (table - REF3)).sum(-1)
    return (weights * (context_kl[ROWS] * MASK3).sum(-1)).sum()


def surrogate3(spec, logps, old_logps, ref_logps):
    """Per-sequence surrogate (N,) the trainer differentiates, masked as the aggregation masks it."""
    est = estimator(spec.estimator)
    if spec.placement == "loss":
        return (kl_placement.loss_kl_term(spec, est, logps, old_logps, ref_logps, MASK3) * MASK3).sum(-1)
    token_rewards = reward_kl_token_rewards(spec, est, old_logps, ref_logps, MASK3)
    rollout = Rollout(rewards=torch.zeros(len(PADDED)), group_ids=torch.arange(len(PADDED)),
                      completion_mask=MASK3, token_rewards=token_rewards)
    return -(rollout.sequence_rewards() * (logps * MASK3).sum(-1))


def three_step_gradient(spec, off_policy=False):
    """E_{y ~ pi_old}[grad L(y)] exactly: grad sum_y sg(pi_old(y)) L(y)."""
    theta = THETA3.clone().requires_grad_()
    logps = padded_logps(theta)
    old_logps = padded_logps(SAMPLER3) if off_policy else logps.detach()
    weights = (old_logps * MASK3).sum(-1).exp()
    return torch.autograd.grad((weights * surrogate3(spec, logps, old_logps, REF3[ROWS, TOKENS])).sum(), theta)[0]


def truth3(kind):
    theta = THETA3.clone().requires_grad_()
    return torch.autograd.grad((exact_sequence_kl3 if kind == "sequence" else exact_per_token_kl3)(theta), theta)[0]


ESTIMATORS = ["k1", "k2", "k3", "k1_straight_through", "k3_straight_through"]
# (estimator, ratio) -> exact per token on-policy (README "exact per token").
PER_TOKEN_EXACT_IN_LOSS = {
    ("k1", False): False, ("k1", True): True,
    ("k2", False): True, ("k2", True): True,
    ("k3", False): False, ("k3", True): True,
    ("k1_straight_through", False): True, ("k1_straight_through", True): True,
    ("k3_straight_through", False): True, ("k3_straight_through", True): True,
}
REWARD_EXACT_FOR_SEQUENCES = {"k1": True, "k1_straight_through": True, "k2": False, "k3": False,
                              "k3_straight_through": False}
LOSS_SPECS = [KLSpec(e, "loss", 1.0, importance_ratio=r, future_kl_correction=c)
              for e in ESTIMATORS for r in (False, True) for c in (False, True)]
REWARD_SPECS = [KLSpec(e, "reward", 1.0) for e in ESTIMATORS]


def exact_for_sequences(spec, off_policy):
    """The README's verdict: loss forms need an exact per-token term and the future-KL correction,
    and off-policy also the importance ratio (prefix weights); reward forms need k1's gradient."""
    if spec.placement == "reward":
        return REWARD_EXACT_FOR_SEQUENCES[spec.estimator]
    per_token = PER_TOKEN_EXACT_IN_LOSS[(spec.estimator, spec.importance_ratio)]
    return per_token and spec.future_kl_correction and (spec.importance_ratio or not off_policy)


def spec_id(spec):
    if spec.placement == "reward":
        return f"{spec.estimator}-reward"
    return f"{spec.estimator}-loss-ratio{int(spec.importance_ratio)}-corr{int(spec.future_kl_correction)}"


def assert_verdict(exact, estimate, truth):
    error = relative_error(estimate, truth)
    assert (error < 1e-9) if exact else (error > 1e-3), f"relative error {error:.3g}, expected exact={exact}"


@pytest.mark.parametrize("spec", LOSS_SPECS, ids=spec_id)
def test_loss_forms_per_token_at_three_steps(spec):
    """On-policy the corrected form is the per-token form plus the future term; the per-token
    term alone is checked against the partial gradient sum_t E[grad KL_t]."""
    estimate = three_step_gradient(_replace(spec, future_kl_correction=False))
    assert_verdict(PER_TOKEN_EXACT_IN_LOSS[(spec.estimator, spec.importance_ratio)], estimate, truth3("per_token"))


# Off-policy, a reward-placed KL is reweighted by the policy loss's own ratio, not by the KL term:
# only loss forms have an off-policy verdict of their own.
SEQUENCE_CASES = [(s, False) for s in LOSS_SPECS + REWARD_SPECS] + [(s, True) for s in LOSS_SPECS]


@pytest.mark.parametrize("spec, off_policy", SEQUENCE_CASES,
                         ids=[f"{spec_id(s)}-{'off' if o else 'on'}_policy" for s, o in SEQUENCE_CASES])
def test_sequence_exactness_at_three_steps(spec, off_policy):
    assert_verdict(exact_for_sequences(spec, off_policy), three_step_gradient(spec, off_policy), truth3("sequence"))


@pytest.mark.parametrize("off_policy", [False, True], ids=["on_policy", "off_policy"])
@pytest.mark.parametrize("spec", LOSS_SPECS + REWARD_SPECS, ids=spec_id)
def test_guard_warns_exactly_when_not_exact_for_sequences(spec, off_policy):
    facts = estimator(spec.estimator).kl_gradient
    if spec.placement == "loss" and not PER_TOKEN_EXACT_IN_LOSS[(spec.estimator, spec.importance_ratio)] \
            and spec.estimator == "k1":
        with pytest.raises(KLConfigError):
            kl_guard_messages(spec, facts, off_policy)
        return
    messages = kl_guard_messages(spec, facts, off_policy)
    exact = exact_for_sequences(spec, off_policy if spec.placement == "loss" else False)
    no_op_trick = spec.placement == "reward" and facts.straight_through
    assert bool(messages) == (not exact or no_op_trick), messages


def test_the_three_step_case_is_not_degenerate():
    """Variable lengths, padding, and a first block moved only by later tokens."""
    assert set(LENGTHS.tolist()) == {1, 2, 3} and len(PADDED) == 15
    assert torch.allclose(padded_logps(THETA3).mul(MASK3).sum(-1).exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    per_token, sequence = truth3("per_token"), truth3("sequence")
    assert per_token[0].abs().max().item() < 1e-12 < sequence[0].abs().max().item()
    assert relative_error(per_token, sequence) > 0.04


# ---- negative controls: two wrong future terms the sequence check must catch ---------------

def future_term_ignoring_the_mask(logps, ref_logps, mask, weight=None):
    with torch.no_grad():
        k1_values = logps - ref_logps
        if weight is not None:
            k1_values = k1_values * weight
        future = reverse_cumsum(k1_values) - k1_values
    return future * logps


def future_term_of_the_next_token_only(logps, ref_logps, mask, weight=None):
    with torch.no_grad():
        k1_values = (logps - ref_logps) * mask
        if weight is not None:
            k1_values = k1_values * weight
        future = torch.zeros_like(k1_values)
        future[:, :-1] = k1_values[:, 1:]
    return future * logps


@pytest.mark.parametrize("mutation", [future_term_ignoring_the_mask, future_term_of_the_next_token_only],
                         ids=["ignores_mask", "next_token_only"])
@pytest.mark.parametrize("off_policy", [False, True], ids=["on_policy", "off_policy"])
def test_mutated_future_terms_fail_the_sequence_check(mutation, off_policy, monkeypatch):
    spec = KLSpec("k3", "loss", 1.0, importance_ratio=True, future_kl_correction=True)
    assert_verdict(True, three_step_gradient(spec, off_policy), truth3("sequence"))
    monkeypatch.setattr(kl_placement, "future_kl_term", mutation)
    with pytest.raises(AssertionError, match="relative error"):
        assert_verdict(True, three_step_gradient(spec, off_policy), truth3("sequence"))


def test_per_token_ratio_without_prefix_weights_is_biased_off_policy(monkeypatch):
    """Negative control for the prefix weights: with every P_t = 1 the corrected form is off."""
    spec = KLSpec("k3", "loss", 1.0, importance_ratio=True, future_kl_correction=True)
    monkeypatch.setattr(kl_placement, "sequence_kl_weights",
                        lambda logps, old_logps, mask, exclusive=False: torch.ones_like(logps))
    assert relative_error(three_step_gradient(spec, off_policy=True), truth3("sequence")) > 1e-3
