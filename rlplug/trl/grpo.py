"""The online adapter: TRL's GRPOTrainer with rlplug's advantage, loss, aggregation and KL."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from rlplug.core.algorithm import Algorithm
from rlplug.core.aggregation import AggregationContext
from rlplug.components.kl_control import AdaptiveKLController
from rlplug.components.kl_placement import check_kl_spec, kl_value, loss_kl_term, reward_kl_token_rewards
from rlplug.components.process_rewards import StepRewards, collect_step_rewards, wrap_reward_functions
from rlplug.components.rollout_assembly import assemble_rollout
from rlplug.core.resolve import OnlineComponents, resolve_online
from rlplug.core.rollout import Rollout
from rlplug.trl.compat import check_methods
from rlplug.trl.entropy import EntropyRegularization
from rlplug.trl.loss_types import matching_loss_type, warn_on_length_weighting, warn_on_unused_sampling_level
from rlplug.trl.dynamic_sampling import build_dynamic_sampler, generate_with_dynamic_sampling
from rlplug.trl.reward_scaling import advantage_from_trl_fields
from rlplug.trl.sampling_corrections import apply_sampling_corrections, selected_sampling_corrections
from rlplug.trl.chunked_forward import install_chunked_heads

_RELIED_ON = {
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_generate_and_score_completions": ("self", "inputs"),
    "_compute_loss": ("self", "model", "inputs"),
    "_get_per_token_logps_and_entropies": (
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy",
        "compute_aux_loss",
    ),
}
_MULTIMODAL_KEYS = (
    "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
)



class RLPlugGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages, policy loss, aggregation and KL come from rlplug components.

    Generation, reward calls, reference handling under PEFT, vLLM, logging and checkpoints
    are TRL's. Only ``_generate_and_score_completions`` (advantages) and ``_compute_loss``
    are replaced. KL: ``placement="loss"`` adds ``coef * estimator [* pi/pi_old]`` to the
    per-token loss; ``placement="reward"`` subtracts ``coef * estimator`` from the rewards
    (per token, detached) before the advantage estimator runs.
    """

    def __init__(self, model: Any, reward_funcs: Any = None, args: GRPOConfig | None = None, *,
                 algorithm: Algorithm, logprob_chunk_size: int | str | None = "auto",
                 **kwargs: Any) -> None:
        check_methods(GRPOTrainer, _RELIED_ON)
        if args is None:
            raise ValueError("RLPlugGRPOTrainer needs a GRPOConfig; rlplug.build_trainer makes one")
        algorithm = advantage_from_trl_fields(algorithm, args)
        self.components: OnlineComponents = resolve_online(algorithm, args)
        warn_on_length_weighting(self.components.policy_loss, self.components.aggregation)
        warn_on_unused_sampling_level(self.components.policy_loss, args.importance_sampling_level)
        args.loss_type = matching_loss_type(self.components.policy_loss, self.components.aggregation) or args.loss_type
        self.entropy_regularization = EntropyRegularization(args)
        self.sampling_corrections = selected_sampling_corrections(algorithm, args)
        kl = algorithm.kl
        check_kl_spec(
            kl,
            self.components.kl_estimator.fn if self.components.kl_estimator else None,
            off_policy=args.num_iterations > 1 or args.use_vllm,
        )
        self.kl_controller = (
            AdaptiveKLController(coef=kl.coef, target=kl.target, horizon=kl.horizon)
            if kl.active and kl.target is not None
            else None
        )
        # TRL's beta decides whether a reference is set up and its log-probs computed.
        args.beta = float(algorithm.kl.coef) if algorithm.kl.active else 0.0
        self._gathered_rewards_per_func: torch.Tensor | None = None
        reward_funcs = wrap_reward_functions(reward_funcs)  # per-step rewards: TRL sees their sum
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        self.dynamic_sampler = build_dynamic_sampler(
            self, algorithm.dynamic_sampling, super()._generate_and_score_completions
        )
        self.logprob_chunk_size = install_chunked_heads(self, self.temperature, logprob_chunk_size)

    @property
    def current_kl(self):
        """The KL spec with the coefficient in force now (it moves under the adaptive controller)."""
        kl = self.components.kl
        return kl if self.kl_controller is None else replace(kl, coef=self.kl_controller.coef)

    # ---- advantages -------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        if self.dynamic_sampler is not None and self.model.training:
            output = generate_with_dynamic_sampling(self, inputs)
        else:
            output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        rollout = self._build_rollout(output, mode)
        advantages = self.components.advantage(rollout)
        if advantages.shape[0] != rollout.batch_size:
            raise ValueError(
                f"advantage estimator {self.components.advantage.name!r} returned shape {tuple(advantages.shape)}, "
                f"expected ({rollout.batch_size},) or ({rollout.batch_size}, T)"
            )
        local_batch = output["completion_ids"].shape[0]
        start = self.accelerator.process_index * local_batch
        local = advantages[start : start + local_batch]
        if local.dim() == 2:
            local = local[:, : output["completion_ids"].shape[1]]
        output["advantages"] = local
        self._log_advantages(advantages, rollout)
        return output

    def _gather_tokens(self, tensor: torch.Tensor) -> torch.Tensor:
        padded = self.accelerator.pad_across_processes(tensor, dim=1, pad_index=0)
        return self.accelerator.gather(padded)

    def _build_rollout(self, output: dict[str, Any], mode: str) -> Rollout:
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        kl = self.current_kl
        if kl.active:
            self._metrics[mode]["kl_coef"].append(kl.coef)
        kl_rewards = None
        if kl.active and (kl.placement == "reward" or self.kl_controller is not None):
            sampling_logps = output.get("old_per_token_logps")
            if sampling_logps is None:
                sampling_logps = self._sampling_logps(output)
            ref_logps = output["ref_per_token_logps"]
            if kl.placement == "reward":
                kl_rewards = self._gather_tokens(
                    reward_kl_token_rewards(kl, self.components.kl_estimator, sampling_logps, ref_logps, mask)
                )
                self._metrics[mode]["kl"].append(self._global_masked_mean(kl_value(sampling_logps, ref_logps), mask))
            if self.kl_controller is not None and mode == "train":
                self._update_kl_controller(kl_value(sampling_logps, ref_logps), mask)
        return assemble_rollout(
            self._gathered_rewards_per_func, self.reward_weights, num_generations, self._gather_tokens(mask),
            steps=self._gathered_step_rewards(output), kl_token_rewards=kl_rewards,
        )

    def _gathered_step_rewards(self, output: dict[str, Any]) -> StepRewards | None:
        """Per-step rewards from process-supervision reward functions (rlplug.components.process_rewards), gathered."""
        completion_ids = output["completion_ids"]
        steps = collect_step_rewards(
            self.reward_funcs, self.reward_weights, *completion_ids.shape, completion_ids.device
        )
        step_mask = self._gather_tokens(steps.step_mask.long()).bool()
        if not bool(step_mask.any()):
            return None
        return StepRewards(
            token_rewards=self._gather_tokens(steps.token_rewards),
            step_mask=step_mask,
            is_process=self.accelerator.gather(steps.is_process.long()).bool(),
        )

    def _update_kl_controller(self, per_token_kl: torch.Tensor, mask: torch.Tensor) -> None:
        """Feed the controller the mean per-sequence KL of the global batch."""
        sequence_kl = self.accelerator.gather((per_token_kl * mask).sum(-1))
        self.kl_controller.update(sequence_kl.mean().item(), sequence_kl.numel())

    _KL_CONTROLLER_FILE = "rlplug_kl_controller.json"

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.kl_controller is not None and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, self._KL_CONTROLLER_FILE), "w") as handle:
                json.dump(self.kl_controller.state_dict(), handle)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, self._KL_CONTROLLER_FILE) if checkpoint else None
        if self.kl_controller is not None and path and os.path.exists(path):
            with open(path) as handle:
                self.kl_controller.load_state_dict(json.load(handle))

    @torch.no_grad()
    def _sampling_logps(self, output: dict[str, Any]) -> torch.Tensor:
        """Log-probs of the sampling policy, when TRL skipped them because the loss needs none."""
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            self.model, input_ids, attention_mask, output["completion_ids"].size(1),
            batch_size=self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size,
            **{key: output[key] for key in _MULTIMODAL_KEYS if key in output},
        )
        return logps

    def _log_advantages(self, advantages: torch.Tensor, rollout: Rollout) -> None:
        if advantages.dim() == 2:
            mask = rollout.completion_mask
            advantages = (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        logged = self._logs["advantages"]
        for _ in range(min(len(logged), rollout.batch_size)):
            logged.pop()
        logged.extend(advantages.tolist())

    # ---- loss -------------------------------------------------------------------------

    def _aggregation_context(self, inputs: dict[str, Any], training: bool) -> AggregationContext:
        return AggregationContext(
            gradient_accumulation_steps=self.current_gradient_accumulation_steps if training else 1,
            num_items_in_batch=inputs.get("num_items_in_batch"),
            num_processes=self.accelerator.num_processes,
            steps_per_generation=self.args.steps_per_generation,
            max_completion_length=self.max_completion_length,
            training=training,
        )

    def _global_masked_mean(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        if values.shape[1] == 1:
            local_sum = values.sum()
            local_count = torch.tensor(float(values.shape[0]), device=values.device)
        else:
            local_sum, local_count = (values * mask).sum(), mask.sum().float()
        totals = self.accelerator.reduce(torch.stack([local_sum, local_count]), reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    def _compute_loss(self, model, inputs):
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1),
            compute_entropy=True, compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in _MULTIMODAL_KEYS},
        )
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps.detach() if old_logps is None else old_logps

        per_token_loss, loss_metrics = self.components.policy_loss(logps, old_logps, advantages, mask)
        entropy_mask = self.entropy_regularization.token_mask(self.accelerator, entropies, mask)
        if entropy_mask is not None:
            per_token_loss = per_token_loss * entropy_mask
        per_token_loss, correction_metrics = apply_sampling_corrections(
            self.sampling_corrections, per_token_loss, logps, old_logps, advantages, mask, inputs
        )
        loss_metrics = {**loss_metrics, **correction_metrics}
        kl = self.current_kl
        if kl.active and kl.placement == "loss":
            ref_logps = inputs["ref_per_token_logps"]
            per_token_loss = per_token_loss + loss_kl_term(
                kl, self.components.kl_estimator, logps, old_logps, ref_logps, mask
            )

        training = self.model.training
        loss = self.components.aggregation(per_token_loss, mask, self._aggregation_context(inputs, training))
        mode = "train" if training else "eval"
        loss = self.entropy_regularization.add_bonus(self, loss, entropies, mask, entropy_mask, mode)
        if self.aux_loss_enabled:
            normalizer = self.current_gradient_accumulation_steps if training else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        if kl.active and kl.placement == "loss":
            self._metrics[mode]["kl"].append(self._global_masked_mean(kl_value(logps, ref_logps), mask))
        self._metrics[mode]["entropy"].append(self._global_masked_mean(entropies, mask))
        for name in sorted(loss_metrics):
            self._metrics[mode][name].append(self._global_masked_mean(loss_metrics[name], mask))
        return loss
