"""Every config in examples/ builds its trainer, with the model and dataset swapped for local tiny ones."""

import json
import re
from pathlib import Path

import pytest
import yaml

from rlplug.app.config import ConfigError, parse_train_args
from rlplug.demo.tiny import PLAIN_CHAT_TEMPLATE, save_tiny_model
from rlplug.app.train import prepare_run
from rlplug.demo import BUILTIN_TASK
from rlplug.trl.grpo import RLPlugGRPOTrainer

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
LINEAR_TYPES = {"4bit": "Linear4bit", "8bit": "Linear8bitLt", "none": "Linear"}


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat_template=PLAIN_CHAT_TEMPLATE))


@pytest.fixture(scope="module")
def gsm8k_like_files(tmp_path_factory):
    """GSM8K's shape: `question`, and `answer` with the reasoning then '#### <number>'."""
    directory = tmp_path_factory.mktemp("gsm8k-like")
    rows = [{"question": f"{a}+{b}", "answer": f"{a} plus {b}\n#### {a + b}"} for a in range(4) for b in range(4)]
    for name, part in (("train.jsonl", rows[:12]), ("test.jsonl", rows[12:])):
        (directory / name).write_text("".join(json.dumps(row) + "\n" for row in part))
    return directory / "train.jsonl", directory / "test.jsonl"


def _swapped_argv(example, model_dir, files, output_dir):
    train, test = files
    return [
        "--config", str(example), "--model_name_or_path", model_dir, "--dataset_name", str(train),
        "--dataset_test_split", str(test), "--output_dir", str(output_dir),
        "--use_cpu", "true",  # the examples ask for bf16 on a GPU; bf16 on CPU needs use_cpu
    ]


def test_there_are_examples_and_each_states_its_gpu_memory():
    assert len(EXAMPLES) >= 3
    for example in EXAMPLES:
        assert re.search(r"GPU memory: about \d+-\d+ GB", example.read_text()), example.name


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_builds_its_trainer(example, chat_model_dir, gsm8k_like_files, tmp_path):
    declared = yaml.safe_load(example.read_text())
    assert declared["model_name_or_path"].startswith("Qwen/") and declared["dataset_name"] == "openai/gsm8k"
    run = prepare_run(parse_train_args(_swapped_argv(example, chat_model_dir, gsm8k_like_files, tmp_path)), BUILTIN_TASK)
    trainer = run.trainer

    assert isinstance(trainer, RLPlugGRPOTrainer)
    assert run.settings.recipe.name == declared["algorithm"]
    for field in ("learning_rate", "num_generations", "max_completion_length", "per_device_train_batch_size",
                  "gradient_accumulation_steps", "max_steps", "temperature"):
        assert getattr(trainer.args, field) == pytest.approx(float(declared[field])), field
    assert trainer.args.bf16 and trainer.args.activation_checkpointing
    # The recipe's defaults survive (dapo's clip-higher), the KL is the example's or the recipe's.
    assert trainer.args.epsilon_high == run.settings.recipe.config_defaults.get("epsilon_high")
    assert trainer.components.kl.coef == declared.get("kl", {}).get("coef", run.settings.recipe.kl.coef)

    # LoRA on the (quantized) base, as declared.
    q_proj = trainer.model.get_base_model().model.layers[0].self_attn.q_proj
    assert hasattr(q_proj, "lora_A") and q_proj.r["default"] == declared["lora_r"]
    assert type(q_proj.base_layer).__name__ == LINEAR_TYPES[declared["quantization"]]

    # The dataset mapping: conversational prompt with the system message, the final answer extracted.
    row = trainer.train_dataset[0]
    assert row["prompt"][0] == {"role": "system", "content": declared["system_prompt"]}
    assert row["prompt"][1]["role"] == "user" and row["answer"] == "0"
    assert [r["answer"] for r in run.eval_dataset] == ["3", "4", "5", "6"]
    assert [f.__name__ for f in run.reward_funcs] == [r["name"] for r in declared["rewards"]]


def test_negative_control_a_rotten_example_fails(tmp_path, chat_model_dir, gsm8k_like_files):
    """An example whose field TRL no longer knows (here: a typo) fails the same build."""
    rotten = tmp_path / "rotten.yaml"
    rotten.write_text(EXAMPLES[0].read_text().replace("num_generations:", "num_generation:"))
    with pytest.raises(ConfigError, match="unknown field 'num_generation'"):
        prepare_run(parse_train_args(_swapped_argv(rotten, chat_model_dir, gsm8k_like_files, tmp_path)), BUILTIN_TASK)
