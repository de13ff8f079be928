"""rlplug.components.chunked_logprobs: the token-chunked LM head equals the unchunked one.

Tolerance: log-probs and entropies are computed row by row by the same ops, so they match
to float rounding of the matmul (BLAS may block a chunk's rows differently from the full
batch); the LM-head weight gradient is a sum over chunks in a different order. Both ≤1e-6.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlplug.components.chunked_logprobs import (
    HeadTransform,
    chunked_token_logprobs,
    unchunked_token_logprobs,
)

N, H, V = 37, 8, 53


def _inputs(seed: int = 0, bias: bool = True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(V, H, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=dtype, requires_grad=True) if bias else None
    targets = torch.randint(0, V, (N,), generator=g)
    return hidden, weight, b, targets


def _loss_and_grads(fn, hidden, weight, bias, targets, transform, **kw):
    g = torch.Generator().manual_seed(1)
    coef_lp, coef_ent = torch.randn(N, generator=g, dtype=hidden.dtype), torch.randn(N, generator=g, dtype=hidden.dtype)
    out = fn(hidden, weight, bias, targets, transform, **kw)
    loss = (coef_lp * out.log_probs).sum() + (coef_ent * out.entropy).sum()
    params = [p for p in (hidden, weight, bias) if p is not None]
    return out, loss, torch.autograd.grad(loss, params)


def test_hand_computed_two_tokens():
    # One hidden unit, identity-like head: logits = [h, 0, -h]; h = log 2 -> logits [ln2, 0, -ln2]
    hidden = torch.tensor([[math.log(2.0)]], dtype=torch.float64)
    weight = torch.tensor([[1.0], [0.0], [-1.0]], dtype=torch.float64)
    out = chunked_token_logprobs(hidden, weight, None, torch.tensor([0]), chunk_size=1)
    z = 2.0 + 1.0 + 0.5  # exp of the logits
    assert out.log_probs.item() == pytest.approx(math.log(2.0 / z), abs=1e-12)
    probs = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64) / z
    assert out.entropy.item() == pytest.approx(float(-(probs * probs.log()).sum()), abs=1e-12)
    assert bool(out.is_top1.item()) and out.mean_logits.item() == pytest.approx(0.0, abs=1e-12)
    assert out.log_sum_sq_probs.item() == pytest.approx(math.log(float((probs**2).sum())), abs=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 5, 36, 37, 1000])
@pytest.mark.parametrize(
    "transform", [HeadTransform(), HeadTransform(temperature=0.7), HeadTransform(logit_scale=0.5, softcap=3.0)]
)
def test_equals_unchunked_values_and_gradients(chunk_size, transform):
    args = _inputs()
    ref_out, ref_loss, ref_grads = _loss_and_grads(unchunked_token_logprobs, *args, transform)
    out, loss, grads = _loss_and_grads(chunked_token_logprobs, *args, transform, chunk_size=chunk_size)
    for name in ("log_probs", "entropy", "mean_logits", "log_sum_sq_probs"):
        torch.testing.assert_close(getattr(out, name), getattr(ref_out, name), rtol=0, atol=1e-6)
    assert torch.equal(out.is_top1, ref_out.is_top1)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=0, atol=1e-6)


def test_float32_log_probs_bitwise_and_grads_close():
    args = _inputs(seed=3, bias=False, dtype=torch.float32)
    ref_out, _, ref_grads = _loss_and_grads(unchunked_token_logprobs, *args, HeadTransform())
    out, _, grads = _loss_and_grads(chunked_token_logprobs, *args, HeadTransform(), chunk_size=N)
    assert torch.equal(out.log_probs, ref_out.log_probs)  # one chunk: the very same ops
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=0, atol=1e-6)


def test_matches_trl_fused_head_on_cpu():
    from trl.kernels import ChunkedLogProbFunction

    hidden, weight, bias, targets = _inputs(seed=5, dtype=torch.float32)
    transform = HeadTransform(temperature=0.9)
    ours = chunked_token_logprobs(hidden, weight, bias, targets, transform, chunk_size=4)
    trl_lp, trl_ent, _, trl_mean, trl_top1 = ChunkedLogProbFunction.apply(
        hidden, weight, bias, targets, 0.9, 16, None, 1.0, ("log_probs", "entropy", "mean_logits", "is_top1")
    )
    torch.testing.assert_close(ours.log_probs, trl_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.entropy, trl_ent, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.mean_logits, trl_mean, rtol=0, atol=1e-5)
    assert torch.equal(ours.is_top1, trl_top1)


def test_gradient_only_through_what_is_used():
    hidden, weight, bias, targets = _inputs()
    out = chunked_token_logprobs(hidden, weight.detach(), None, targets, chunk_size=7)
    (grad,) = torch.autograd.grad(out.entropy.sum(), [hidden])
    ref = unchunked_token_logprobs(hidden, weight.detach(), None, targets)
    (ref_grad,) = torch.autograd.grad(ref.entropy.sum(), [hidden])
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("wrong", ["shifted_targets", "temperature"])
def test_negative_control_wrong_variant_is_caught(wrong):
    hidden, weight, bias, targets = _inputs()
    transform = HeadTransform(temperature=0.7)
    ref_out, _, ref_grads = _loss_and_grads(unchunked_token_logprobs, hidden, weight, bias, targets, transform)
    if wrong == "shifted_targets":  # off by one: each position scored against the next token
        targets = torch.roll(targets, -1)
    else:
        transform = HeadTransform(temperature=1.0)
    out, _, grads = _loss_and_grads(chunked_token_logprobs, hidden, weight, bias, targets, transform, chunk_size=5)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out.log_probs, ref_out.log_probs, rtol=0, atol=1e-6)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(grads[1], ref_grads[1], rtol=0, atol=1e-6)


def test_bad_input_names_the_field():
    hidden, weight, _, targets = _inputs()
    with pytest.raises(ValueError, match="logprob_chunk_size"):
        chunked_token_logprobs(hidden, weight, None, targets, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        HeadTransform(temperature=0.0)


def test_peak_memory_is_per_chunk():
    """The largest tensor autograd keeps is hidden/weight, never [N, V]: saved tensors are counted."""
    hidden, weight, _, targets = _inputs(dtype=torch.float32)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_token_logprobs(hidden, weight, None, targets, chunk_size=4)
    assert max(saved) == V * H  # the weight; no [N, V] (= 1961) or [4, V] logits kept
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unchunked_token_logprobs(hidden, weight, None, targets)
    assert max(saved) == N * V  # negative control: the naive path keeps the full logits
