"""rlplug.app.memory_estimate: the arithmetic, by hand, and the line ``rlplug train`` prints."""

from __future__ import annotations

import pytest

from rlplug.app.config import ConfigError, parse_chunk_size
from rlplug.app.memory_estimate import (
    LIVE_LOGIT_COPIES,
    MemoryEstimate,
    describe_memory,
    estimate_memory,
    memory_line,
)


def test_qwen25_15b_shaped_qlora_by_hand():
    # 1.5B-shaped: 28 layers, 2 KV heads of 128, V=151936; 8 x (256 + 512) tokens; LoRA 18.5M params
    estimate = estimate_memory(
        weight_bytes=1_000_000_000, trainable_params=18_464_768, vocab_size=151936, tokens_per_pass=8 * 768,
        chunk_size=128, num_layers=28, num_kv_heads=2, head_dim=128, generation_sequences=8,
        generation_tokens=768, cache_dtype_bytes=2,
    )
    assert estimate.trainable == 16 * 18_464_768
    assert estimate.logits_per_chunk == 128 * 151936 * 4  # 77.8 MB
    kv = 2 * 28 * 2 * 128 * 8 * 768 * 2  # 176,160,768 bytes
    assert estimate.generation == kv + 8 * 151936 * 4
    assert estimate.total == 1_000_000_000 + 16 * 18_464_768 + LIVE_LOGIT_COPIES * 128 * 151936 * 4 + kv + 8 * 151936 * 4


def test_trl_tiles_when_not_chunked():
    estimate = estimate_memory(weight_bytes=0, trainable_params=0, vocab_size=151936, tokens_per_pass=8 * 768,
                               chunk_size=None)
    assert estimate.logits_per_chunk == 4096 * 32768 * 4  # TRL's CPU tile: 512 MiB
    small = estimate_memory(weight_bytes=0, trainable_params=0, vocab_size=100, tokens_per_pass=10, chunk_size=None)
    assert small.logits_per_chunk == 10 * 100 * 4 and small.generation == 0


def test_negative_control_chunk_changes_the_estimate():
    args = dict(weight_bytes=0, trainable_params=0, vocab_size=151936, tokens_per_pass=6144)
    assert estimate_memory(chunk_size=128, **args).logits_per_chunk != estimate_memory(chunk_size=None, **args).logits_per_chunk
    assert estimate_memory(chunk_size=128, **args).logits_per_chunk * 2 == estimate_memory(chunk_size=256, **args).logits_per_chunk


def test_description_names_each_term():
    line = describe_memory(MemoryEstimate(2 * 1024**3, 1024**3, 1024**3 // 8, 0), 128, "8 x (256 + 512) generated tokens")
    assert line == (
        "rlplug: memory estimate: weights 2.00 GiB, trainable + grads + AdamW 1.00 GiB, log-prob logits 0.125 GiB "
        "per chunk (chunks of 128 tokens; x4 live in backward), generation 0.00 GiB; about 3.50 GiB plus "
        "activations (8 x (256 + 512) generated tokens)"
    )


def test_line_for_a_built_trainer(tiny_model_dir, tmp_path):
    from rlplug import build_trainer
    from rlplug.demo.arithmetic_preference import preference_dataset

    trainer = build_trainer("dpo", model=tiny_model_dir, train_dataset=preference_dataset("paired").select(range(4)),
                            output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=2,
                            max_length=64, logprob_chunk_size=16)
    params = sum(p.numel() for p in trainer.model.parameters())
    line = memory_line(trainer)
    assert "chunks of 16 tokens" in line and "up to 4 x 64 tokens per pass" in line
    assert f"weights {params * 4 / 1024**3:.2f} GiB" in line


def test_chunk_size_config_field():
    assert parse_chunk_size("auto") == "auto" and parse_chunk_size("0") == 0 and parse_chunk_size(256) == 256
    for bad in ("-1", "big", "1.5"):
        with pytest.raises(ConfigError, match="logprob_chunk_size"):
            parse_chunk_size(bad)


def test_train_cli_takes_the_switch(tmp_path):
    from rlplug.app.config import parse_train_args

    assert parse_train_args([]).rlplug.logprob_chunk_size == "auto"
    assert parse_train_args(["--logprob_chunk_size", "64"]).rlplug.logprob_chunk_size == 64
    config = tmp_path / "c.yaml"
    config.write_text("logprob_chunk_size: 0\n")
    assert parse_train_args(["--config", str(config)]).rlplug.logprob_chunk_size == 0
    with pytest.raises(ConfigError, match="logprob_chunk_size"):
        parse_train_args(["--logprob_chunk_size", "lots"])
