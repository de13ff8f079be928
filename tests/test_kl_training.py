"""KL placements in real training runs, and the adaptive coefficient with checkpoint resume."""

import pytest

from rlplug import build_trainer
from rlplug.components.kl_control import AdaptiveKLController
from rlplug.demo.arithmetic import train_dataset


def test_adaptive_controller_moves_toward_the_target():
    controller = AdaptiveKLController(coef=0.1, target=1.0, horizon=100)
    assert controller.update(observed_kl=3.0, num_completions=10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    controller = AdaptiveKLController(coef=0.1, target=1.0, horizon=100)
    assert controller.update(observed_kl=0.9, num_completions=10) == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    assert controller.update(observed_kl=1.0, num_completions=10) == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))


def count_of_ones(prompts, completions, **kwargs):
    """A dense reward, so that even the untrained tiny model gets a learning signal."""
    return [float(completion.count("1")) for completion in completions]


def make_trainer(model_dir, output_dir, kl, **overrides):
    fields = dict(
        per_device_train_batch_size=8, num_generations=4, max_completion_length=3, learning_rate=5e-2,
        bf16=False, gradient_checkpointing=False, report_to="none", logging_steps=1, seed=3,
        max_steps=4, save_strategy="no",
    )
    fields.update(overrides)
    return build_trainer("grpo", model=model_dir, reward_funcs=[count_of_ones],
                         train_dataset=train_dataset(), kl=kl, output_dir=str(output_dir), **fields)


@pytest.mark.parametrize(
    "kl",
    [
        {"estimator": "k1", "placement": "reward", "coef": 0.1},
        {"estimator": "k3", "placement": "loss", "coef": 0.1, "importance_ratio": True},
        {"estimator": "k2", "placement": "loss", "coef": 0.1, "future_kl_correction": True},
    ],
    ids=["k1-reward", "k3-ratio-loss", "k2-loss-corrected"],
)
def test_each_placement_trains_and_logs_the_kl(tiny_model_dir, tmp_path, kl):
    trainer = make_trainer(tiny_model_dir, tmp_path, kl, max_steps=3)
    trainer.train()
    logged = [row for row in trainer.state.log_history if "kl" in row]
    assert len(logged) == 3
    assert all(row["kl_coef"] == 0.1 for row in logged)
    assert logged[-1]["kl"] > 0  # the policy moved away from the reference at this learning rate
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # before the first update policy == reference


def test_no_kl_means_no_reference_pass(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, {"coef": 0.0}, max_steps=1)
    assert trainer.beta == 0.0 and trainer.ref_model is None
    trainer.train()
    assert not any("kl" in row for row in trainer.state.log_history)


def test_adaptive_coefficient_survives_a_resume(tiny_model_dir, tmp_path):
    kl = {"estimator": "k1", "placement": "reward", "coef": 0.2, "target": 1e-4, "horizon": 50}
    straight = make_trainer(tiny_model_dir, tmp_path / "straight", kl)
    straight.train()
    uninterrupted = straight.kl_controller.coef
    assert uninterrupted != pytest.approx(0.2)  # it moved

    first = make_trainer(tiny_model_dir, tmp_path / "resumed", kl, save_strategy="steps", save_steps=2)
    first.train()
    resumed = make_trainer(tiny_model_dir, tmp_path / "resumed", kl, save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-2"))
    assert resumed.kl_controller.coef == uninterrupted

    fresh = make_trainer(tiny_model_dir, tmp_path / "fresh", kl, max_steps=2)
    fresh.train()
    assert fresh.kl_controller.coef != uninterrupted  # negative control: 2 steps alone do not get there
