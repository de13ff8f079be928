"""`rlplug train`: config parsing and overrides, bad configs, and short real runs."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlplug import Algorithm, KLSpec, get_registry
from rlplug.app.config import ConfigError, parse_train_args
from rlplug.demo import BUILTIN_TASK
from rlplug.demo.embedded import embedded_trainer_fields
from rlplug.core.registry import UnknownComponentError
from rlplug.app.report import PLOT_FILE, SUMMARY_FILE
from rlplug.app.train import execute, prepare_run
from rlplug.cli import train as main


def _write(path, text):
    path.write_text(text)
    return str(path)


# ---- parsing and overrides -------------------------------------------------------------


def test_no_arguments_is_the_embedded_default():
    settings = parse_train_args([])
    assert settings.recipe.name == "grpo"
    assert settings.model.is_builtin and settings.data.is_builtin
    assert settings.model.lora and settings.model.lora_target_modules == ["all-linear"]
    assert (settings.model.lora_r, settings.model.lora_alpha, settings.model.quantization) == (16, 32, "none")
    assert settings.trainer_fields == {}
    assert settings.trainer_config_class.__name__ == "GRPOConfig"


def test_command_line_shortcuts(tmp_path):
    settings = parse_train_args(
        ["--algorithm", "dr_grpo", "--max_steps", "20", "--output_dir", str(tmp_path), "--quantization", "4bit"]
    )
    assert settings.recipe.name == "dr_grpo"
    assert (settings.recipe.advantage, settings.recipe.aggregation) == ("group_mean", "constant_normalizer")
    assert settings.model.quantization == "4bit"
    assert settings.trainer_fields == {"max_steps": 20, "output_dir": str(tmp_path)}


def test_yaml_then_command_line_override(tmp_path):
    config = _write(
        tmp_path / "c.yaml",
        """
algorithm: dr_grpo
advantage: group_norm
kl: {estimator: k2, placement: loss, coef: 0.05}
rewards:
  - {name: arithmetic_exact_match, weight: 2.0}
lora_r: 8
lora_target_modules: [q_proj, v_proj]
learning_rate: 1e-4
num_generations: 4
temperature: 0.7
""",
    )
    settings = parse_train_args(["--config", config, "--learning_rate", "3e-4", "--lora_r", "4", "--no_lora"])
    assert settings.recipe.name == "dr_grpo"
    assert settings.recipe.advantage == "group_norm"  # the component override beats the recipe
    assert settings.recipe.kl == KLSpec(estimator="k2", placement="loss", coef=0.05)
    assert [(r.name, r.weight) for r in settings.rlplug.rewards] == [("arithmetic_exact_match", 2.0)]
    assert settings.model.lora_r == 4 and settings.model.lora is False
    assert settings.model.lora_target_modules == ["q_proj", "v_proj"]
    # YAML's "1e-4" is a string to YAML; it arrives as a float. The command line wins over the file.
    assert settings.trainer_fields == {"learning_rate": 3e-4, "num_generations": 4, "temperature": 0.7}


def test_structured_values_from_the_command_line():
    settings = parse_train_args(
        ["--kl", "{coef: 0.02, placement: reward, estimator: k1}", "--rewards", "arithmetic_exact_match"]
    )
    assert settings.recipe.kl == KLSpec(estimator="k1", placement="reward", coef=0.02)
    assert [(r.name, r.weight) for r in settings.rlplug.rewards] == [("arithmetic_exact_match", 1.0)]


def test_precedence_embedded_below_recipe_below_user():
    online = get_registry().get("trainer_kinds", "online")
    base = online.embedded_defaults
    plain = Algorithm(name="plain", advantage="group_norm", policy_loss="ppo_clip", aggregation="local_token_mean")
    assert embedded_trainer_fields(plain, online, {}, user_kl_given=False) == base
    recipe = Algorithm(name="x", config_defaults={"learning_rate": 5e-4, "temperature": 0.6}, kl=KLSpec(coef=0.1))
    fields = embedded_trainer_fields(recipe, online, {"max_steps": 7, "gradient_checkpointing": True}, user_kl_given=False)
    assert "learning_rate" not in fields and "temperature" not in fields  # the recipe's own defaults win
    assert "max_steps" not in fields  # the user's value wins
    assert "activation_checkpointing" not in fields  # its alias was set by the user
    assert "beta" not in fields  # the recipe has an active KL of its own
    assert fields["per_device_train_batch_size"] == 128


def test_built_trainer_gets_recipe_embedded_and_user_values(tmp_path):
    run = prepare_run(parse_train_args(["--algorithm", "dapo", "--temperature", "0.8", "--output_dir", str(tmp_path)]), BUILTIN_TASK)
    args = run.trainer.args
    assert args.epsilon_high == 0.28  # dapo's recipe default
    assert (args.learning_rate, args.per_device_train_batch_size, args.num_generations) == (1e-3, 128, 8)
    assert (args.max_completion_length, args.bf16, args.activation_checkpointing) == (4, False, False)
    assert args.temperature == 0.8  # the user's
    assert run.trainer.components.kl.coef == 0.01 and args.beta == 0.01
    assert args.reward_weights == [1.0]
    assert run.trainer.reward_func_names == ["arithmetic_exact_match"]  # logged as rewards/<registry name>
    assert len(run.eval_dataset) == 334


# ---- bad configs ------------------------------------------------------------------------


BAD_CONFIGS = {
    "unknown algorithm": ("", ["--algorithm", "grpoo"], ["unknown algorithm 'grpoo'", "Did you mean: grpo"]),
    "unknown reward": (
        "rewards: [{name: arithmetic_exact_mach}]\n", [], ["unknown reward function 'arithmetic_exact_mach'", "arithmetic_exact_match"]
    ),
    "malformed yaml": ("algorithm: grpo\nrewards: [{name: x\nlora_r: 3\n", [], ["malformed YAML at line", "c.yaml"]),
    "yaml not a mapping": ("- a\n- b\n", [], ["must be a YAML mapping"]),
    "bad quantization on the command line": ("", ["--quantization", "3bit"], ["--quantization", "invalid choice: '3bit'", "'none', '4bit', '8bit'"]),
    "bad quantization in yaml": ("quantization: 2bit\n", [], ["quantization must be one of none, 4bit, 8bit; got '2bit'"]),
    "unknown yaml field": ("lerning_rate: 0.1\n", [], ["unknown field 'lerning_rate'", "Did you mean: learning_rate"]),
    "unknown option": ("", ["--lerning_rate", "0.1"], ["unknown option '--lerning_rate'", "learning_rate"]),
    "bad kl placement": ("kl: {placement: everywhere}\n", [], ["kl.placement must be one of reward, loss, none"]),
    "unknown kl key": ("kl: {coeff: 0.1}\n", [], ["kl has unknown key(s) coeff", "allowed: estimator"]),
    "quantization without lora": ("", ["--quantization", "4bit", "--no_lora"], ["quantization=4bit needs lora"]),
    "kl twice": ("kl: {coef: 0.1}\n", ["--beta", "0.2"], ["give the KL once"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_with_one_line(case, tmp_path, capsys):
    text, extra, expected = BAD_CONFIGS[case]
    argv = (["--config", _write(tmp_path / "c.yaml", text)] if text else []) + extra
    assert main(argv + ["--output_dir", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("rlplug train: error: ") and "Traceback" not in captured.err
    for fragment in expected:
        assert fragment in lines[0]
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback():
    with pytest.raises(UnknownComponentError):
        main(["--algorithm", "grpoo", "--debug"])


def test_negative_control_a_good_config_is_not_rejected(tmp_path):
    """The same file with the typo fixed parses: the checks above reject the problem, not the file."""
    assert parse_train_args(["--config", _write(tmp_path / "c.yaml", "learning_rate: 0.1\n")]).trainer_fields == {
        "learning_rate": 0.1
    }
    with pytest.raises(ConfigError):
        parse_train_args(["--config", _write(tmp_path / "d.yaml", "lerning_rate: 0.1\n")])


def test_entry_point_prints_no_traceback(tmp_path):
    config = _write(tmp_path / "bad.yaml", "algorithm: [unclosed\n")
    rlplug = Path(sys.executable).with_name("rlplug")
    result = subprocess.run([str(rlplug), "train", "--config", config], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("rlplug train: error: config ")
    assert "Traceback" not in result.stderr
    assert "malformed YAML" in result.stderr


# ---- real runs ---------------------------------------------------------------------------


def _summary(directory):
    return json.loads((Path(directory) / SUMMARY_FILE).read_text())


def test_dr_grpo_short_run_writes_summary_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--algorithm", "dr_grpo", "--max_steps", "20", "--output_dir", str(out)]) == 0
    summary = _summary(out)
    assert summary["algorithm"] == "dr_grpo" and summary["steps"] == 20
    assert summary["logged_points"] == 20  # logging_steps 0.025 of 20 steps rounds up to every step
    for key in ("wall_seconds", "reward_first", "reward_last", "eval_before", "eval_after"):
        assert isinstance(summary[key], float) and math.isfinite(summary[key]), key
    assert (out / PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    prompts = int(re.search(r"greedy answers, (\d+) prompts", printed).group(1))
    assert prompts > 300  # the held-out third of the 1,000 problems
    for key in ("eval_before", "eval_after"):  # exact-match accuracy: a count of held-out prompts over their number
        assert abs(summary[key] * prompts - round(summary[key] * prompts)) < 1e-9, key
    assert 0.1 < summary["eval_before"] < 0.9  # the warmed-up model answers some, not all
    assert f"before {summary['eval_before']:.3f} -> after {summary['eval_after']:.3f}" in printed


def test_quantization_4bit_run(tmp_path):
    import bitsandbytes as bnb

    out = tmp_path / "q"
    run = prepare_run(parse_train_args(["--quantization", "4bit", "--max_steps", "3", "--output_dir", str(out)]), BUILTIN_TASK)
    base = run.trainer.model.get_base_model()
    q_proj = base.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit) and q_proj.base_layer.weight.quant_type == "nf4"
    assert hasattr(q_proj, "lora_A")
    summary = execute(run, started=0.0)
    assert summary["steps"] == 3 and (out / PLOT_FILE).exists() and (out / SUMMARY_FILE).exists()


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    def numbers(name, *extra):
        assert main(["--max_steps", "6", "--output_dir", str(tmp_path / name), *extra]) == 0
        summary = _summary(tmp_path / name)
        return [summary[k] for k in ("reward_first", "reward_last", "eval_before", "eval_after")]

    first, again = numbers("a"), numbers("b")
    assert first == again
    other = numbers("c", "--seed", "7")  # negative control: the comparison can fail
    assert other != first
