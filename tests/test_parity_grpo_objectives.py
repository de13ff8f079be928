"""Parity: SAPO, LUSPO, VESPO, sequence-level CISPO and the entropy terms against TRL's native GRPOTrainer.

Same set-up as tests/test_parity_grpo.py (whose helpers this reuses): both trainers run
the same steps from the same weights, seed and data, float32, with gradient accumulation,
several steps per generation and two iterations per generation, so old log-probs come
from generation time and ratios leave 1. Each rlplug run is selected two ways where it
matters: by rlplug's algorithm name, and by TRL's own config fields unchanged
(``loss_type``, ``importance_sampling_level``, ``entropy_coef`` ...). Losses, gradients
and weights must be equal bitwise. Each case has a negative control that a changed
parameter breaks parity.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from test_parity_grpo import (
    COMMON_CONFIG,
    Record,
    assert_bitwise_same_run,
    max_grad_diff,
    run_native,
    run_rlplug,
    train_and_record,
    SEED,
    _Recorder,
    _SyncWeights,
    digit_fraction_reward,
    prompts,
)

# name -> (native TRL fields, rlplug algorithm or None for "selected by TRL's fields", rlplug overrides)
CASES: dict[str, tuple[dict[str, Any], str | None, dict[str, Any]]] = {
    "sapo": ({"loss_type": "sapo"}, "sapo", {}),
    "sapo_by_loss_type": ({"loss_type": "sapo"}, None, {"loss_type": "sapo"}),
    "luspo": ({"loss_type": "luspo", "importance_sampling_level": "sequence"}, "luspo", {}),
    "vespo": ({"loss_type": "vespo"}, "vespo", {}),
    "vespo_by_loss_type": ({"loss_type": "vespo"}, None, {"loss_type": "vespo"}),
    "cispo_sequence": (
        {"loss_type": "cispo", "importance_sampling_level": "sequence", "epsilon_high": 5.0},
        "cispo", {"importance_sampling_level": "sequence"},
    ),
    "cispo_sequence_by_loss_type": (
        {"loss_type": "cispo", "importance_sampling_level": "sequence", "epsilon_high": 5.0},
        None, {"loss_type": "cispo", "importance_sampling_level": "sequence", "epsilon_high": 5.0},
    ),
    "entropy_bonus_static": ({"loss_type": "grpo", "entropy_coef": 0.05}, "grpo", {"entropy_coef": 0.05}),
    "entropy_bonus_adaptive": (
        {"loss_type": "grpo", "use_adaptive_entropy": True, "entropy_coef": 0.05, "entropy_target": 100.0},
        "grpo", {"use_adaptive_entropy": True, "entropy_coef": 0.05, "entropy_target": 100.0},
    ),
    "entropy_filter": ({"loss_type": "dapo", "top_entropy_quantile": 0.2}, None, {"loss_type": "dapo", "top_entropy_quantile": 0.2}),
    "entropy_filter_and_bonus": (
        {"loss_type": "grpo", "top_entropy_quantile": 0.2, "entropy_coef": 0.05},
        "grpo", {"top_entropy_quantile": 0.2, "entropy_coef": 0.05},
    ),
}


def run_rlplug_selected(model_dir: str, output_dir: str, algorithm: str | None, sync_to: Record, **overrides: Any) -> Record:
    """rlplug's run with ``algorithm`` None meaning: chosen from TRL's fields alone (build_trainer's default)."""
    if algorithm is not None:
        return run_rlplug(model_dir, output_dir, algorithm, 0.0, sync_to=sync_to, **overrides)
    from transformers import set_seed

    from rlplug.trl.build import build_trainer

    record = Record()
    set_seed(SEED)
    trainer = build_trainer(
        model=model_dir, reward_funcs=[digit_fraction_reward], train_dataset=prompts(),
        callbacks=[_Recorder(record), _SyncWeights(sync_to.weights_after_step, record)],
        output_dir=output_dir, beta=0.0, **COMMON_CONFIG, **overrides,
    )
    return train_and_record(trainer, record)


def assert_not_vacuous(native: Record) -> None:
    assert max(native.logged("reward_std")) > 0
    assert any(not torch.equal(g, torch.zeros_like(g)) for g in native.grads[0].values())


# Negative controls: the case with one parameter changed, which must break parity on the same native run.
NEGATIVE_CONTROLS: dict[str, dict[str, Any]] = {
    "sapo": {"sapo_temperature_neg": 2.0},
    "luspo": {"aggregation": "sequence_mean_token_mean"},
    "vespo": {"vespo_k_pos": 1.0},
    "cispo_sequence": {"importance_sampling_level": "token"},
    "entropy_bonus_static": {"entropy_coef": 0.0},
    "entropy_bonus_adaptive": {"use_adaptive_entropy": False},
    "entropy_filter": {"top_entropy_quantile": 0.5},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bitwise_equal_to_native_trl(tiny_model_dir, tmp_path, case):
    """Bitwise parity; then, where the case has a negative control, the wrong variant is caught."""
    native_fields, algorithm, overrides = CASES[case]
    native = run_native(tiny_model_dir, str(tmp_path / "native"), 0.0, native_fields)
    ours = run_rlplug_selected(tiny_model_dir, str(tmp_path / "rlplug"), algorithm, native, **overrides)
    assert_not_vacuous(native)
    assert_bitwise_same_run(native, ours)
    assert native.logged("entropy") == ours.logged("entropy")
    if "entropy_coef" in native_fields:
        assert native.logged("entropy_coef") == ours.logged("entropy_coef")
    if native_fields.get("use_adaptive_entropy"):
        coefs = native.logged("entropy_coef")
        assert coefs[0] == pytest.approx(0.055) and coefs[-1] > coefs[0], coefs  # the controller moved
    if case in NEGATIVE_CONTROLS:
        wrong = run_rlplug_selected(
            tiny_model_dir, str(tmp_path / "wrong"), algorithm, native, **{**overrides, **NEGATIVE_CONTROLS[case]}
        )
        with pytest.raises(AssertionError):
            assert_bitwise_same_run(native, wrong)
        assert max(max_grad_diff(a, b) for a, b in zip(native.grads, wrong.grads)) > 1e-6


def test_gmpo_equal_to_trl_experimental_gmpo_trainer(tiny_model_dir, tmp_path):
    """rlplug ``gmpo`` against ``trl.experimental.gmpo.GMPOTrainer``: losses and gradients <= 1e-6.

    Why not bitwise: TRL averages the per-sequence loss l_i directly; rlplug's aggregation
    ``sequence_mean_token_mean`` receives the (B, 1) loss broadcast over the mask and computes
    (l_i * n_i) / n_i per sequence, which can differ from l_i in the last bit. The rlplug run
    is put back on the native weights after each optimizer step so each step compares the
    same batch. Negative control: GRPO's arithmetic-mean ratio (``ppo_clip``) is caught.
    """
    import warnings

    from transformers import set_seed

    from trl.experimental.gmpo import GMPOConfig, GMPOTrainer

    native = Record()
    set_seed(SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = GMPOConfig(output_dir=str(tmp_path / "native"), beta=0.0, **COMMON_CONFIG)
        trainer = GMPOTrainer(
            model=tiny_model_dir, reward_funcs=[digit_fraction_reward], args=args, train_dataset=prompts(),
            callbacks=[_Recorder(native)],
        )
    train_and_record(trainer, native)
    assert (args.epsilon, args.epsilon_high) == (0.4, None)  # TRL: high = low = 0.4, as the recipe sets
    ours = run_rlplug(tiny_model_dir, str(tmp_path / "rlplug"), "gmpo", 0.0, sync_to=native)
    assert_not_vacuous(native)
    assert len(native.losses) == len(ours.losses)
    assert max((a - b).abs().item() for a, b in zip(native.losses, ours.losses)) <= 1e-6
    assert max(max_grad_diff(a, b) for a, b in zip(native.grads, ours.grads)) <= 1e-6
    assert native.logged("clip_ratio/region_mean") == ours.logged("clip_ratio/region_mean")
    wrong = run_rlplug(tiny_model_dir, str(tmp_path / "wrong"), "gmpo", 0.0, sync_to=native, policy_loss="ppo_clip")
    assert max(max_grad_diff(a, b) for a, b in zip(native.grads, wrong.grads)) > 1e-6
