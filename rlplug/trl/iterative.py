"""Online / iterative DPO and Curry-DPO: rounds of the paired adapter on pairs the policy makes.

Each round samples completions from the current policy, scores them with reward functions
(any registered reward, including ``reward_model``), builds preference pairs
(:mod:`rlplug.components.preference_pairs`) and trains the recipe's preference loss on them
with TRL's DPOTrainer (:class:`rlplug.trl.dpo.RLPlugDPOTrainer`). With
``refresh_reference`` the next round's reference is the policy at the end of this round:
with LoRA a frozen ``ref`` adapter (TRL's reference adapter) receives the trained adapter's
weights; in full fine-tuning the reference copy receives the policy's.

``pairing="best_worst"`` (online / iterative DPO, seed 002): new samples every round, the
best completion of a prompt against its worst; ``"best_vs_frequent"``: against the most
often sampled lower-scored completion (the policy's likeliest mistake). ``pairing="curriculum"`` (Curry-DPO, seed
003 §5.3.4): samples drawn once from the starting policy, the best completion against one
of every lower score level, ordered from the largest rank gap to the smallest and cut into
``rounds`` stages. ``max_steps`` is the total over all rounds.

TRL 1.16 has ``trl.experimental.online_dpo.OnlineDPOTrainer``; it generates and judges
every step and computes its own loss, so it cannot run an rlplug preference loss; this
adapter reuses the stable DPOTrainer instead.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from trl import DPOConfig

from rlplug.components.preference_pairs import (
    ScoredPair, best_vs_frequent_pairs, best_worst_pairs, curriculum_stages, pair_rows, ranked_pairs,
)
from rlplug.components.rewards import build_reward_functions
from rlplug.core.algorithm import Algorithm
from rlplug.trl.dpo import RLPlugDPOTrainer

REFERENCE_ADAPTER = "ref"
PAIRINGS = {"best_worst": best_worst_pairs, "best_vs_frequent": best_vs_frequent_pairs}  # sampled every round


@dataclass
class IterativeDPOConfig(DPOConfig):
    """DPOConfig plus the rounds. Every DPOConfig field keeps its meaning."""

    rounds: int = field(default=3, metadata={"help": "Rounds (Curry-DPO: stages); max_steps is split evenly."})
    pairing: Literal["best_worst", "best_vs_frequent", "curriculum"] = field(
        default="best_worst",
        metadata={"help": "best_worst / best_vs_frequent: online/iterative DPO; curriculum: Curry-DPO."})
    num_generations: int = field(default=8, metadata={"help": "Completions sampled per prompt."})
    max_completion_length: int = field(default=16, metadata={"help": "Tokens generated per completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    refresh_reference: bool = field(
        default=True, metadata={"help": "Reference of each round = the policy at the end of the previous one."})
    label_rewards: list[str] | None = field(
        default=None, metadata={"help": "Registered rewards that rank samples; default: the trainer's reward_funcs."})
    reward_weights: list[float] | None = field(default=None, metadata={"help": "Weights of reward_funcs."})
    generation_batch_size: int = field(default=256, metadata={"help": "Prompts x samples per generate call."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.pairing not in PAIRINGS and self.pairing != "curriculum":
            raise ValueError(f"pairing must be one of {', '.join([*PAIRINGS, 'curriculum'])}; got {self.pairing!r}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be at least 2 to make a pair, got {self.num_generations}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be set (>= 1) for iterative training: it is split over the rounds; "
                             f"got {self.max_steps}")
        if self.max_steps < self.rounds:
            warnings.warn(f"max_steps ({self.max_steps}) < rounds ({self.rounds}): running {self.max_steps} round(s) "
                          "of one optimizer step each", UserWarning, stacklevel=2)
            self.rounds = self.max_steps


def sample_completions(model: Any, tokenizer: Any, prompts: list[str], num: int, max_new_tokens: int,
                       temperature: float, batch_size: int, seed: int) -> list[list[str]]:
    """``num`` sampled completions per text prompt, decoded without special tokens."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    expanded = [p for p in prompts for _ in range(num)]
    texts: list[str] = []
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        try:
            for start in range(0, len(expanded), batch_size):
                encoded = tokenizer(expanded[start:start + batch_size], return_tensors="pt", padding=True,
                                    add_special_tokens=False).to(device)
                output = model.generate(
                    **encoded, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_k=0,
                    top_p=1.0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                texts.extend(tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True))
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
    return [texts[i * num:(i + 1) * num] for i in range(len(prompts))]


def score_completions(reward_funcs: list[Any], weights: list[float], rows: list[dict[str, Any]],
                      samples: list[list[str]]) -> list[list[float]]:
    """Weighted sum of the rewards of every sample; a reward's None counts as 0."""
    num = len(samples[0]) if samples else 0
    prompts = [row["prompt"] for row in rows for _ in range(num)]
    completions = [c for group in samples for c in group]
    columns = {key: [row[key] for row in rows for _ in range(num)] for key in rows[0] if key != "prompt"}
    total = [0.0] * len(completions)
    for fn, weight in zip(reward_funcs, weights, strict=True):
        values = fn(prompts=prompts, completions=completions, **columns)
        total = [t + weight * (0.0 if v is None else float(v)) for t, v in zip(total, values, strict=True)]
    return [total[i * num:(i + 1) * num] for i in range(len(samples))]


class RLPlugIterativeDPOTrainer(RLPlugDPOTrainer):
    """Rounds of :class:`RLPlugDPOTrainer` on pairs sampled from the policy (module docstring).

    ``train_dataset`` holds prompts (``prompt`` plus the columns the rewards read);
    ``reward_funcs`` rank the samples unless ``args.label_rewards`` names others.
    """

    def __init__(self, model: Any, ref_model: Any = None, args: IterativeDPOConfig | None = None, *,
                 algorithm: Algorithm, reward_funcs: list[Any] | None = None, train_dataset: Any = None,
                 **kwargs: Any) -> None:
        if not isinstance(args, IterativeDPOConfig):
            raise ValueError("RLPlugIterativeDPOTrainer needs an IterativeDPOConfig; rlplug.build_trainer makes one")
        if train_dataset is None or "prompt" not in train_dataset.column_names:
            raise ValueError("train_dataset: iterative preference training needs prompts (a `prompt` column)")
        self.reward_funcs = list(reward_funcs or [])  # what the task is scored by (rlplug train's evaluation)
        if args.label_rewards is not None:
            label_funcs, weights = build_reward_functions(list(args.label_rewards), args)
        else:
            label_funcs, weights = self.reward_funcs, args.reward_weights
        if not label_funcs:
            raise ValueError("reward_funcs: iterative preference training ranks samples with at least one reward")
        self.label_funcs = list(label_funcs)
        self.label_weights = [1.0] * len(self.label_funcs) if weights is None else [float(w) for w in weights]
        self.prompt_rows = [dict(row) for row in train_dataset]
        # TRL tokenizes a paired dataset at construction; each round replaces it with real pairs.
        first = self.prompt_rows[0]["prompt"]
        placeholder = Dataset.from_list([{"prompt": first, "chosen": " ", "rejected": "  "}])
        super().__init__(model=model, ref_model=ref_model, args=args, algorithm=algorithm,
                         train_dataset=placeholder, **kwargs)
        if args.refresh_reference and is_peft_model(self.model) and self.ref_model is None:
            self.model.add_adapter(REFERENCE_ADAPTER, self.model.peft_config[self.model.active_adapter])
            self._copy_policy_to_reference()
        self.round_sizes: list[int] = []

    def _copy_policy_to_reference(self) -> None:
        """The reference becomes the current policy."""
        if self.ref_model is not None:
            self.ref_model.load_state_dict(self.accelerator.unwrap_model(self.model).state_dict())
            return
        active = self.model.active_adapter
        params = dict(self.model.named_parameters())
        for name, param in params.items():
            if f".{REFERENCE_ADAPTER}." in name:
                source = params[name.replace(f".{REFERENCE_ADAPTER}.", f".{active}.")]
                with torch.no_grad():
                    param.copy_(source)
                param.requires_grad_(False)

    def _sample_pairs(self, round_index: int, build: Any) -> list[ScoredPair]:
        args = self.args
        prompts = [row["prompt"] for row in self.prompt_rows]
        samples = sample_completions(self.model, self.processing_class, prompts, args.num_generations,
                                     args.max_completion_length, args.temperature, args.generation_batch_size,
                                     seed=args.seed + round_index)
        scores = score_completions(self.label_funcs, self.label_weights, self.prompt_rows, samples)
        return build(samples, scores)

    def _round_datasets(self) -> Any:
        """Yield each round's paired rows; sampling happens lazily, with the policy of that moment."""
        args = self.args
        prompts = [row["prompt"] for row in self.prompt_rows]
        if args.pairing == "curriculum":
            for stage in curriculum_stages(self._sample_pairs(0, ranked_pairs), args.rounds):
                yield pair_rows(stage, prompts)
        else:
            for round_index in range(args.rounds):
                yield pair_rows(self._sample_pairs(round_index, PAIRINGS[args.pairing]), prompts)

    def train(self, resume_from_checkpoint: Any = None, **kwargs: Any) -> Any:
        if resume_from_checkpoint:
            raise ValueError("resume_from_checkpoint: iterative preference training does not resume mid-run; unset it")
        args = self.args
        total_steps = args.max_steps
        base, extra = divmod(total_steps, args.rounds)
        history: list[dict[str, Any]] = []
        done, output = 0, None
        try:
            for round_index, rows in enumerate(self._round_datasets()):
                if not rows:
                    raise ValueError(f"round {round_index + 1}: every prompt's samples scored the same; no pairs")
                self.round_sizes.append(len(rows))
                self.train_dataset = self._prepare_dataset(Dataset.from_list(rows), self.processing_class, args, "train")
                args.max_steps = base + (1 if round_index < extra else 0)
                self.optimizer, self.lr_scheduler = None, None
                output = super().train(**kwargs)
                history.extend({**entry, "step": entry.get("step", 0) + done, "round": round_index + 1}
                               for entry in self.state.log_history)
                done += self.state.global_step
                if args.refresh_reference and round_index + 1 < args.rounds:
                    self._copy_policy_to_reference()
        finally:
            args.max_steps = total_steps
        self.state.log_history = history
        self.state.global_step = done
        return output
