"""The actor-critic adapter: the online adapter plus a critic (``Rollout.values``) and a value loss.

Generation, reward functions, the reference under PEFT, vLLM, minibatching
(``steps_per_generation``), epochs over a rollout (``num_iterations``) and checkpoints are
TRL's GRPOTrainer's, through :class:`rlplug.trl.grpo.RLPlugGRPOTrainer`. This module adds:

- the critic (:mod:`rlplug.trl.critic`): old values at rollout time, values again in the loss;
- value targets ``returns = A + V_old`` from the per-token advantage estimator (``gae``),
  then the advantages whitened over the local batch's tokens (``whiten_advantages``);
- ``vf_coef * value_loss``, an entropy bonus ``-entropy_coef * H_t`` and, for PPO-ptx,
  ``-ptx_coef * mean log pi(x)`` on a batch of pretraining text;
- one completion per prompt: ``num_generations=1`` is accepted (GRPO needs 2 for its group
  baseline; the critic is the baseline here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from trl import GRPOConfig

from rlplug.components.critic_stats import explained_variance, masked_whiten
from rlplug.core.algorithm import Algorithm
from rlplug.core.resolve import BoundComponent, ComponentConfigError, bind_component
from rlplug.core.rollout import Rollout
from rlplug.trl.critic import add_critic, critic_active, critic_parameters, critic_values
from rlplug.trl.grpo import RLPlugGRPOTrainer

CRITIC_FILE = "rlplug_critic.pt"


@dataclass
class RLPlugPPOConfig(GRPOConfig):
    """GRPOConfig plus the critic's fields (names and defaults of TRL's former PPOConfig)."""

    num_generations: int | None = field(default=1, metadata={"help": "Completions per prompt; 1 is allowed."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range eps_v."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor of GAE."})
    lam: float = field(default=0.95, metadata={"help": "Lambda of GAE."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten advantages over the batch's tokens."})
    ptx_coef: float = field(default=0.0, metadata={"help": "PPO-ptx: weight of the pretraining log-likelihood."})

    def __post_init__(self) -> None:
        # GRPO refuses one completion per prompt (its baseline is the group); PPO's is the critic.
        requested = self.num_generations
        if requested == 1:
            self.num_generations = 2
            if self.num_generations_eval is None:
                self.num_generations_eval = 1
        try:
            super().__post_init__()
        finally:
            self.num_generations = requested
        for name in ("vf_coef", "ptx_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)!r}")


class RLPlugPPOTrainer(RLPlugGRPOTrainer):
    """Actor-critic on TRL's GRPOTrainer: see the module docstring."""

    def __init__(self, model: Any, reward_funcs: Any = None, args: RLPlugPPOConfig | None = None, *,
                 algorithm: Algorithm, ptx_dataset: Any = None, **kwargs: Any) -> None:
        if not isinstance(args, RLPlugPPOConfig):
            raise ValueError("RLPlugPPOTrainer needs an RLPlugPPOConfig; rlplug.build_trainer makes one")
        if algorithm.value_loss is None:
            raise ComponentConfigError(f"algorithm {algorithm.name!r} names no value_loss; set `value_loss`")
        if args.ptx_coef > 0 and ptx_dataset is None:
            raise ValueError("ptx_coef > 0 (PPO-ptx) needs a ptx_dataset of pretraining text (a 'text' column)")
        self.value_loss: BoundComponent = bind_component(
            "value_losses", algorithm.value_loss, algorithm.component_params.get("value_loss", {}), args
        )
        # The entropy bonus is applied here (TRL's own would need its loss path).
        self.entropy_coef_bonus = float(args.entropy_coef)
        args.entropy_coef = 0.0
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, algorithm=algorithm, **kwargs)
        self.value_head = add_critic(self.model)
        self._ptx_texts = None if ptx_dataset is None else list(ptx_dataset["text"])
        self._ptx_position = 0
        self._local_old_values: torch.Tensor | None = None
        self._last_entropies: torch.Tensor | None = None

    # ---- rollout: old values, returns ---------------------------------------------------

    @torch.no_grad()
    def _old_values(self, output: dict[str, Any]) -> torch.Tensor:
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        length = output["completion_ids"].size(1)
        chunk = self.args.per_device_train_batch_size
        with critic_active(self.model):
            return torch.cat([
                critic_values(self.model, input_ids[i : i + chunk], attention_mask[i : i + chunk], length)
                for i in range(0, input_ids.shape[0], chunk)
            ])

    def _build_rollout(self, output: dict[str, Any], mode: str) -> Rollout:
        rollout = super()._build_rollout(output, mode)
        local_values = self._old_values(output).float()
        self._local_old_values = local_values
        return replace(rollout, values=self._gather_tokens(local_values))

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        advantages, old_values = output["advantages"], self._local_old_values
        if advantages.dim() != 2:
            raise ValueError(
                f"the ppo trainer needs per-token advantages (B, T) from a critic-based estimator such as gae; "
                f"{self.components.advantage.name!r} returned one per sequence"
            )
        mask = output["completion_mask"].to(old_values.dtype)
        returns = (advantages + old_values) * mask
        self._metrics[mode]["critic/explained_variance"].append(explained_variance(old_values, returns, mask).item())
        self._metrics[mode]["critic/value_mean"].append(((old_values * mask).sum() / mask.sum()).item())
        output["old_values"] = old_values
        output["returns"] = returns
        output["advantages"] = masked_whiten(advantages, mask) if self.args.whiten_advantages else advantages
        return output

    # ---- loss: policy + vf_coef * value + entropy bonus + ptx ---------------------------

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        self._last_entropies = entropies
        return logps, entropies, aux

    def _critic_trainable(self) -> None:
        # PEFT freezes inactive adapters whenever adapters are re-enabled (after TRL's reference
        # forward under ``disable_adapter``) or loaded (resume); the critic trains in every step.
        for _, parameter in critic_parameters(self.model):
            parameter.requires_grad_(True)

    def create_optimizer(self, *args, **kwargs):
        self._critic_trainable()
        return super().create_optimizer(*args, **kwargs)

    def _compute_loss(self, model, inputs):
        self._critic_trainable()
        loss = super()._compute_loss(model, inputs)
        training = self.model.training
        mode = "train" if training else "eval"
        ctx = self._aggregation_context(inputs, training)
        completion_ids, mask = inputs["completion_ids"], inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        # The critic's term is differentiated here, with its adapter active: activation checkpointing
        # recomputes the forward during backward, which must see the same adapter.
        with critic_active(self.model):
            values = critic_values(self.model, input_ids, attention_mask, completion_ids.size(1))
            per_token_value_loss, value_metrics = self.value_loss(
                values, inputs["old_values"], inputs["returns"], mask
            )
            value_term = self.args.vf_coef * self.components.aggregation(per_token_value_loss, mask, ctx)
            if training and value_term.requires_grad:
                self.accelerator.backward(value_term)
        loss = loss + value_term.detach()
        self._metrics[mode]["critic/value_loss"].append(self._global_masked_mean(per_token_value_loss.detach(), mask))
        for name in sorted(value_metrics):
            self._metrics[mode][name].append(self._global_masked_mean(value_metrics[name], mask))
        if self.entropy_coef_bonus != 0.0:
            loss = loss + self.components.aggregation(-self.entropy_coef_bonus * self._last_entropies, mask, ctx)
        if self.args.ptx_coef > 0 and training:
            ptx_logp = self._ptx_log_likelihood(model)
            loss = loss - self.args.ptx_coef * ptx_logp / ctx.gradient_accumulation_steps
            self._metrics[mode]["ptx/log_likelihood"].append(ptx_logp.item())
        return loss

    def _next_ptx_texts(self) -> list[str]:
        size = self.args.per_device_train_batch_size
        texts = [self._ptx_texts[(self._ptx_position + i) % len(self._ptx_texts)] for i in range(size)]
        self._ptx_position = (self._ptx_position + size) % len(self._ptx_texts)
        return texts

    def _ptx_log_likelihood(self, model) -> torch.Tensor:
        """Mean per-token log pi(x) over a batch of pretraining text (InstructGPT's ptx term)."""
        tokenizer = self.processing_class
        batch = tokenizer(self._next_ptx_texts(), return_tensors="pt", padding=True, padding_side="right")
        input_ids = batch["input_ids"].to(self.accelerator.device)
        attention_mask = batch["attention_mask"].to(self.accelerator.device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
        targets = input_ids[:, 1:]
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        target_mask = attention_mask[:, 1:].to(token_logps.dtype)
        return (token_logps * target_mask).sum() / target_mask.sum()

    # ---- checkpoints: the critic adapter and the value head ------------------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            state = {name: p.detach().cpu() for name, p in critic_parameters(self.model)}
            torch.save(state, os.path.join(folder, CRITIC_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, CRITIC_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"resume_from_checkpoint: {path} (the critic) is missing")
        state = torch.load(path, map_location="cpu")
        with torch.no_grad():
            for name, parameter in critic_parameters(self.model):
                parameter.copy_(state[name].to(parameter.device, parameter.dtype))
