"""GPU memory of one QLoRA training step on Qwen2.5-shaped random-weight models (run where a GPU is lent).

For each model size (Qwen2.5-0.5B, -1.5B, -3B shapes, configs built here, no hub access)
and each algorithm, one child process builds the random-weight model in bf16, loads it
4-bit (bitsandbytes NF4, double quantization) with a LoRA adapter (r=16, all linear
layers) and runs one optimizer step with gradient checkpointing: G=8 completions of 512
tokens for a 256-token prompt (online), or 8 rows / pairs of 256 + 512 tokens
(preference). It prints ``torch.cuda.max_memory_allocated`` per algorithm. On CUDA TRL's
Triton fused LM head scores the log-probs (rlplug delegates to it there); the goal for
1.5B is under 4.5 GB.

Usage: python benchmarks/memory_gpu.py [--sizes 0.5b 1.5b 3b] [--algorithms grpo dpo kto] [--native]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Qwen2.5 shapes (config.json of the released models): tied embeddings, V=151936.
QWEN25_SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2),
}
VOCAB = 151936
ALGORITHMS = {"grpo": "online", "dpo": "paired", "kto": "unpaired"}


def qwen25_config(size: str):
    """A Qwen2Config with the shape of Qwen2.5-``size``."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=VOCAB, max_position_embeddings=32768, tie_word_embeddings=True,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, **QWEN25_SHAPES[size])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(QWEN25_SHAPES), default=list(QWEN25_SHAPES))
    parser.add_argument("--algorithms", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS))
    parser.add_argument("--generations", type=int, default=8, help="G: completions per prompt / rows per batch")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--completion-tokens", type=int, default=512)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--native", action="store_true", help="also measure TRL's native trainer")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per child")
    parser.add_argument("--child", nargs=4, metavar=("SIZE", "ALGORITHM", "IMPL", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.generations, args.prompt_tokens, args.completion_tokens, args.lora_r) < 1:
        parser.error("--generations, --prompt-tokens, --completion-tokens and --lora-r must be positive")
    return args


def _text(n: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    return "".join(rng.choice("0123456789+") for _ in range(n))


def build_model_dir(size: str, directory: Path) -> None:
    import torch
    from transformers import Qwen2ForCausalLM

    from rlplug.demo.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = qwen25_config(size)
    config.pad_token_id, config.eos_token_id, config.bos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id, None
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def child(size: str, algorithm: str, impl: str, model_dir: str, args: argparse.Namespace) -> None:
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from rlplug import build_trainer

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization, dtype=torch.bfloat16)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type="CAUSAL_LM")
    g, p, c = args.generations, args.prompt_tokens, args.completion_tokens
    family = ALGORITHMS[algorithm]
    if family == "online":
        rows = [{"prompt": _text(p, i)} for i in range(g)]
        fields = dict(num_generations=g, max_completion_length=c, beta=0.04, generation_kwargs={"min_new_tokens": c})
        extra = {"reward_funcs": lambda completions, **_: [float(len(t)) for t in completions]}
    elif family == "paired":
        rows = [{"prompt": _text(p, i), "chosen": _text(c, 100 + i), "rejected": _text(c, 200 + i)} for i in range(g)]
        fields, extra = dict(max_length=p + c), {}
    else:
        rows = [{"prompt": _text(p, i), "completion": _text(c, 100 + i), "label": i % 2 == 0} for i in range(g)]
        fields, extra = dict(max_length=p + c), {}
    with tempfile.TemporaryDirectory() as output_dir:
        fields.update(output_dir=output_dir, per_device_train_batch_size=g, max_steps=1, bf16=True, report_to="none",
                      save_strategy="no", gradient_checkpointing=True, logging_steps=1)
        common = dict(model=model, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=lora)
        if impl == "rlplug":
            trainer = build_trainer(algorithm, **common, **extra, **fields)
        else:
            config_class, trainer_class = {"online": (trl.GRPOConfig, trl.GRPOTrainer),
                                           "paired": (trl.DPOConfig, trl.DPOTrainer),
                                           "unpaired": (trl.KTOConfig, trl.KTOTrainer)}[family]
            trainer = trainer_class(args=config_class(**fields), **common, **extra)
        torch.cuda.reset_peak_memory_stats()
        trainer.train()
    print(json.dumps({"size": size, "algorithm": algorithm, "impl": impl,
                      "max_memory_allocated": torch.cuda.max_memory_allocated()}))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(*args.child, args=args)
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("memory_gpu.py needs a CUDA GPU; benchmarks/memory.py is the CPU benchmark")
    passthrough = [f"--generations={args.generations}", f"--prompt-tokens={args.prompt_tokens}",
                   f"--completion-tokens={args.completion_tokens}", f"--lora-r={args.lora_r}"]
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as model_dir:
            build_model_dir(size, Path(model_dir))
            for algorithm in args.algorithms:
                for impl in ("rlplug", "native") if args.native else ("rlplug",):
                    command = [sys.executable, __file__, *passthrough, "--child", size, algorithm, impl, model_dir]
                    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                    if result.returncode != 0:
                        print(f"Qwen2.5-{size} {algorithm} {impl}: failed: {result.stderr.strip().splitlines()[-1:]}")
                        continue
                    run = json.loads(result.stdout.strip().splitlines()[-1])
                    print(f"Qwen2.5-{size} {algorithm:5s} {impl:7s} max_memory_allocated "
                          f"{run['max_memory_allocated'] / 1e9:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
