"""benchmarks/memory.py and benchmarks/memory_gpu.py without running them (no GPU here, and
the CPU benchmark takes minutes): arguments, model shapes and inputs they would use."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size, billions", [("0.5b", 0.494), ("1.5b", 1.544), ("3b", 3.086)])
def test_gpu_configs_have_qwen25_parameter_counts(size, billions):
    from transformers import Qwen2ForCausalLM

    gpu = load("memory_gpu")
    with torch.device("meta"):
        model = Qwen2ForCausalLM(gpu.qwen25_config(size))
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert count == pytest.approx(billions, abs=0.002)  # the released models' published counts


def test_gpu_config_negative_control_untied_head_is_caught():
    from transformers import Qwen2ForCausalLM

    gpu = load("memory_gpu")
    config = gpu.qwen25_config("1.5b")
    config.tie_word_embeddings = False
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) / 1e9 != pytest.approx(1.544, abs=0.002)


def test_gpu_arguments():
    gpu = load("memory_gpu")
    args = gpu.parse_args([])
    assert (args.sizes, args.algorithms) == (["0.5b", "1.5b", "3b"], ["grpo", "dpo", "kto"])
    assert (args.generations, args.prompt_tokens, args.completion_tokens) == (8, 256, 512)
    args = gpu.parse_args(["--sizes", "1.5b", "--algorithms", "grpo", "--native"])
    assert args.sizes == ["1.5b"] and args.algorithms == ["grpo"] and args.native
    with pytest.raises(SystemExit):
        gpu.parse_args(["--sizes", "7b"])
    with pytest.raises(SystemExit):
        gpu.parse_args(["--generations", "0"])


def test_cpu_benchmark_inputs_are_512_tokens():
    cpu = load("memory")
    from rlplug.demo.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    for family in ("online", "paired", "unpaired"):
        rows = cpu.datasets(family)
        assert len(rows) == cpu.ROWS == 8
        assert len(tokenizer(rows[0]["prompt"])["input_ids"]) == cpu.PROMPT_TOKENS
    paired = cpu.datasets("paired")[0]
    assert len(tokenizer(paired["chosen"])["input_ids"]) == cpu.COMPLETION_TOKENS
    assert cpu.PROMPT_TOKENS + cpu.COMPLETION_TOKENS == 512 and cpu.VOCAB == 151936
    assert cpu.family_fields("online")["max_completion_length"] == cpu.COMPLETION_TOKENS
