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


def test_k1_in_the_loss_has_zero_gradient_and_is_refused():
    estimate, truth = single_token_gradients(KLSpec("k1", "loss", 1.0, importance_ratio=False), 1.0)
    assert estimate.abs().max().item() < 1e-12 and truth.abs().max().item() > 0.1
    with pytest.raises(KLConfigError, match="k1 in the loss"):
        check_kl_spec(KLSpec("k1", "loss", 0.1))


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
    spec = KLSpec("k3", "loss", 1.0, importance_ratio=True)
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
