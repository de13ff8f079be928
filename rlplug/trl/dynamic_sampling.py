"""DAPO dynamic sampling on TRL's GRPOTrainer: generate rounds, keep informative groups, refill.

The first round is TRL's own generation batch; each further round generates for as many
prompts again, drawn from the training set with a generator seeded by (seed, step, round).
The kept rows of all rounds are padded to a common length and concatenated, so the loss
sees a batch of the usual size. Logged: ``dynamic_sampling/rounds``,
``dynamic_sampling/generations_per_kept_group``, ``dynamic_sampling/dropped_groups`` and
``dynamic_sampling/shortfall_groups``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from rlplug.components.dynamic_sampling import DynamicSamplingPlan, plan_dynamic_batch
from rlplug.components.rollout_assembly import assemble_rollout
from rlplug.core.algorithm import DynamicSamplingSpec

_LEFT_PADDED = {"prompt_ids", "prompt_mask"}
_RIGHT_PADDED = {
    "completion_ids", "completion_mask", "old_per_token_logps", "sampling_per_token_logps", "ref_per_token_logps",
    "tool_mask", "importance_sampling_ratio", "advantages",
}
_RECOMPUTED = {"num_items_in_batch"}


def check_dynamic_sampling(num_processes: int) -> None:
    if num_processes > 1:
        raise ValueError("dynamic_sampling runs on one process only (groups would be split across processes); unset it")


def concat_rows(outputs: list[dict[str, Any]], rows: list[tuple[int, int]], pad_ids: dict[str, int]) -> dict[str, Any]:
    """The rows ``(round, index)`` of several generation outputs as one output, padded to common lengths."""
    unknown = sorted(set(outputs[0]) - _LEFT_PADDED - _RIGHT_PADDED - _RECOMPUTED)
    if unknown:
        raise ValueError(f"dynamic_sampling cannot merge generation outputs with {', '.join(unknown)} (multimodal?)")
    merged: dict[str, Any] = {}
    for key in outputs[0]:
        if key in _RECOMPUTED:
            continue
        tensors = [output[key] for output in outputs]
        if tensors[0].dim() == 2:
            length = max(t.shape[1] for t in tensors)
            side = "left" if key in _LEFT_PADDED else "right"
            tensors = [_pad(t, length, pad_ids.get(key, 0), side) for t in tensors]
        merged[key] = torch.stack([tensors[r][i] for r, i in rows])
    loss_mask = merged["completion_mask"] if "tool_mask" not in merged else merged["completion_mask"] * merged["tool_mask"]
    merged["num_items_in_batch"] = loss_mask.sum()
    return merged


def _pad(tensor: torch.Tensor, length: int, value: float, side: str) -> torch.Tensor:
    missing = length - tensor.shape[1]
    if missing == 0:
        return tensor
    padding = torch.full((tensor.shape[0], missing), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([padding, tensor] if side == "left" else [tensor, padding], dim=1)


class DynamicSampler:
    """Generates for a trainer until its batch holds only informative groups (or the cap is hit).

    ``generate_and_score(inputs)`` is TRL's generation and scoring; ``outcome_rewards()``
    returns the (B,) weighted outcome rewards of the last call and its (B, F) per-function
    rewards; ``draw_inputs(n, round)``
    returns ``n`` fresh generation inputs (prompts repeated per group).
    """

    def __init__(
        self,
        spec: DynamicSamplingSpec,
        group_size: int,
        generate_and_score: Callable[[list], dict[str, Any]],
        outcome_rewards: Callable[[], torch.Tensor],
        draw_inputs: Callable[[int, int], list],
        pad_ids: dict[str, int],
    ) -> None:
        self.spec = spec
        self.group_size = group_size
        self.generate_and_score = generate_and_score
        self.outcome_rewards = outcome_rewards
        self.draw_inputs = draw_inputs
        self.pad_ids = pad_ids
        self.last_plan: DynamicSamplingPlan | None = None

    def __call__(self, inputs: list) -> tuple[dict[str, Any], torch.Tensor, DynamicSamplingPlan]:
        """The merged output, the merged per-function rewards, and the plan."""
        outputs: list[dict[str, Any]] = []
        rewards_per_func: list[torch.Tensor] = []

        def generate_round(round_index: int) -> torch.Tensor:
            batch = inputs if round_index == 0 else self.draw_inputs(len(inputs), round_index)
            outputs.append(self.generate_and_score(batch))
            rewards, per_func = self.outcome_rewards()
            rewards_per_func.append(per_func)
            return rewards

        plan = plan_dynamic_batch(
            generate_round, len(inputs) // self.group_size, self.group_size, self.spec.max_generation_rounds
        )
        rows = [(r, g * self.group_size + k) for r, g in plan.chosen for k in range(self.group_size)]
        merged_rewards = torch.stack([rewards_per_func[r][i] for r, i in rows])
        self.last_plan = plan
        return concat_rows(outputs, rows, self.pad_ids), merged_rewards, plan


def build_dynamic_sampler(
    trainer: Any, spec: DynamicSamplingSpec | None, generate_and_score: Callable[[list], dict[str, Any]]
) -> DynamicSampler | None:
    """A sampler bound to an :class:`rlplug.trl.grpo.RLPlugGRPOTrainer`, or None when ``spec`` is None."""
    if spec is None:
        return None
    check_dynamic_sampling(trainer.accelerator.num_processes)
    group_size = trainer.num_generations

    def generate_outcome_only(batch: list) -> dict[str, Any]:
        output = generate_and_score(batch)
        if trainer._gathered_step_rewards(output) is not None:
            raise ValueError(
                "dynamic_sampling filters groups on outcome rewards; per-step (process) rewards are not supported with it"
            )
        return output

    def outcome_rewards() -> tuple[torch.Tensor, torch.Tensor]:
        per_func = trainer._gathered_rewards_per_func
        mask = torch.ones(per_func.shape[0], 1, device=per_func.device)
        return assemble_rollout(per_func, trainer.reward_weights, group_size, mask).rewards, per_func

    def draw_inputs(count: int, round_index: int) -> list:
        dataset = trainer.train_dataset
        generator = torch.Generator().manual_seed(
            trainer.args.seed * 1_000_003 + trainer.state.global_step * 1009 + round_index
        )
        indices = torch.randint(len(dataset), (count // group_size,), generator=generator).tolist()
        return [dataset[i] for i in indices for _ in range(group_size)]

    pad_id = trainer._tokenizer.pad_token_id
    return DynamicSampler(
        spec, group_size, generate_outcome_only, outcome_rewards, draw_inputs,
        pad_ids={"prompt_ids": pad_id, "completion_ids": pad_id},
    )


def generate_with_dynamic_sampling(trainer: Any, inputs: list) -> dict[str, Any]:
    """Run the trainer's sampler, leave the kept groups' rewards where the rollout reads them, and log the cost."""
    output, rewards_per_func, plan = trainer.dynamic_sampler(inputs)
    trainer._gathered_rewards_per_func = rewards_per_func
    metrics = trainer._metrics["train"]
    metrics["dynamic_sampling/rounds"].append(float(plan.rounds))
    metrics["dynamic_sampling/generations_per_kept_group"].append(plan.generations_per_kept_group)
    metrics["dynamic_sampling/dropped_groups"].append(float(plan.generated // trainer.num_generations - plan.informative_kept))
    metrics["dynamic_sampling/shortfall_groups"].append(float(plan.shortfall))
    return output
