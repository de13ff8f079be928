"""Peak resident memory of one training step: rlplug (token-chunked LM head) vs TRL's native trainer.

For each family, one optimizer step on a random-weight model with a Qwen2.5-shaped
vocabulary (V=151936, tied embeddings) and a small body (hidden 64, 2 layers), B=8
sequences of T=512 tokens (128 prompt + 384 completion; DPO: 8 pairs, i.e. 16 sequences;
KTO: 8 rows plus their 8 mismatched KL rows), float32 on the CPU, one torch thread:

- online:   rlplug ``grpo``  vs ``trl.GRPOTrainer`` (beta=0.04: a reference pass too)
- paired:   rlplug ``dpo``   vs ``trl.DPOTrainer``
- unpaired: rlplug ``kto``   vs ``trl.KTOTrainer``

Each measurement runs in its own child process, alternating rlplug and native. A child
builds its trainer, records its resident set size (``VmRSS``) as the baseline, trains one
step, and reports ``ru_maxrss`` (the process's peak RSS). The figure compared is the peak
minus the baseline: what the step itself added (model, optimizer state and reference
copy are in the baseline). Raw peaks are printed too. Last line per family:

    peak memory ratio rlplug/native: X

Usage: python benchmarks/memory.py [--families online paired unpaired] [--repeats 1] [--chunk 128]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

VOCAB = 151936  # Qwen2.5
HIDDEN = 64
PROMPT_TOKENS, COMPLETION_TOKENS, ROWS = 128, 384, 8
FAMILIES = {"online": "grpo", "paired": "dpo", "unpaired": "kto"}


def build_model(directory: Path) -> None:
    """A random-weight Qwen2 with Qwen2.5's vocabulary and a tiny body, and the character tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlplug.demo.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _digits(n: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    return "".join(rng.choice("0123456789+") for _ in range(n))


def datasets(family: str):
    from datasets import Dataset

    rows = []
    for i in range(ROWS):
        prompt = _digits(PROMPT_TOKENS, i)
        if family == "online":
            rows.append({"prompt": prompt})
        elif family == "paired":
            rows.append({"prompt": prompt, "chosen": _digits(COMPLETION_TOKENS, 100 + i),
                         "rejected": _digits(COMPLETION_TOKENS, 200 + i)})
        else:
            rows.append({"prompt": prompt, "completion": _digits(COMPLETION_TOKENS, 100 + i), "label": i % 2 == 0})
    return Dataset.from_list(rows)


def length_reward(completions, **kwargs):
    return [float(len(text)) for text in completions]


def common_fields(output_dir: str) -> dict:
    return dict(
        output_dir=output_dir, per_device_train_batch_size=ROWS, max_steps=1, learning_rate=1e-4, bf16=False,
        use_cpu=True, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        dataloader_num_workers=0, gradient_checkpointing=False,
    )


def family_fields(family: str) -> dict:
    if family == "online":
        return dict(num_generations=ROWS, max_completion_length=COMPLETION_TOKENS, beta=0.04,
                    generation_kwargs={"min_new_tokens": COMPLETION_TOKENS})
    return dict(max_length=PROMPT_TOKENS + COMPLETION_TOKENS)


def build(family: str, impl: str, model_dir: str, output_dir: str, chunk: int):
    from transformers import AutoTokenizer

    import trl
    from rlplug import build_trainer

    fields = {**common_fields(output_dir), **family_fields(family)}
    train = datasets(family)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    extra = {"reward_funcs": length_reward} if family == "online" else {}
    if impl == "rlplug":
        return build_trainer(FAMILIES[family], model=model_dir, train_dataset=train, processing_class=tokenizer,
                             logprob_chunk_size=chunk, **extra, **fields)
    config_class, trainer_class = {
        "online": (trl.GRPOConfig, trl.GRPOTrainer),
        "paired": (trl.DPOConfig, trl.DPOTrainer),
        "unpaired": (trl.KTOConfig, trl.KTOTrainer),
    }[family]
    return trainer_class(model_dir, args=config_class(**fields), train_dataset=train, processing_class=tokenizer,
                         **extra)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(family: str, impl: str, model_dir: str, chunk: int) -> None:
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build(family, impl, model_dir, output_dir, chunk)
        baseline = rss_kib()
        trainer.train()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"family": family, "impl": impl, "baseline_kib": baseline, "peak_kib": peak,
                      "chunk": getattr(trainer, "logprob_chunk_size", None)}))


def measure(family: str, impl: str, model_dir: str, chunk: int, timeout: int) -> dict:
    command = [sys.executable, __file__, "--child", family, impl, model_dir, "--chunk", str(chunk)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{family}/{impl} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--repeats", type=int, default=1, help="pairs of (rlplug, native) children per family")
    parser.add_argument("--chunk", type=int, default=128, help="rlplug's logprob_chunk_size (tokens)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per child")
    parser.add_argument("--child", nargs=3, metavar=("FAMILY", "IMPL", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, chunk=args.chunk)
        return
    with tempfile.TemporaryDirectory() as model_dir:
        build_model(Path(model_dir))
        print(f"model: random Qwen2, V={VOCAB}, hidden={HIDDEN}, 2 layers; B={ROWS}, T={PROMPT_TOKENS}+"
              f"{COMPLETION_TOKENS}; rlplug logprob_chunk_size={args.chunk}", flush=True)
        for family in args.families:
            runs = {"rlplug": [], "native": []}
            for _ in range(args.repeats):
                for impl in ("rlplug", "native"):
                    run = measure(family, impl, model_dir, args.chunk, args.timeout)
                    runs[impl].append(run)
                    print(f"{family:9s} {impl:7s} baseline {run['baseline_kib'] / 1024:8.1f} MiB  "
                          f"peak {run['peak_kib'] / 1024:8.1f} MiB  step added "
                          f"{(run['peak_kib'] - run['baseline_kib']) / 1024:8.1f} MiB", flush=True)
            added = {impl: statistics.median(r["peak_kib"] - r["baseline_kib"] for r in rs) for impl, rs in runs.items()}
            raw = {impl: statistics.median(r["peak_kib"] for r in rs) for impl, rs in runs.items()}
            print(f"{family}: raw peak ratio rlplug/native: {raw['rlplug'] / raw['native']:.3f}")
            print(f"{family}: peak memory ratio rlplug/native: {added['rlplug'] / added['native']:.3f}", flush=True)


if __name__ == "__main__":
    main()
