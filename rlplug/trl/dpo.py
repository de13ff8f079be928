"""The paired-preference adapter: TRL's DPOTrainer with the loss from an rlplug preference loss.

Tokenization, collation, reference handling (a frozen copy, or the base model with the
LoRA adapter disabled, or precomputed log-probs), logging and checkpoints are TRL's.
Only ``_compute_loss`` is replaced: it fills a :class:`rlplug.core.preference.PreferenceBatch`
and calls the selected loss. A loss declared with ``needs_reference=False`` (CPO, SimPO)
gets no reference forward pass, and in full fine-tuning no reference copy is loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DPOConfig, DPOTrainer

from rlplug.core.algorithm import Algorithm
from rlplug.core.preference import PreferenceBatch, token_mean_nll
from rlplug.core.resolve import PreferenceComponents, resolve_preference
from rlplug.trl.chunked_forward import install_chunked_heads
from rlplug.trl.compat import check_methods, refuse_unsupported
from rlplug.trl.preference_common import (
    check_datasets,
    check_losses,
    check_trainer_attributes,
    log_logit_metrics,
    log_loss_metrics,
    log_token_metrics,
    recompute_outputs,
    skip_reference_copy,
)

_RELIED_ON = {
    "_compute_loss": ("self", "model", "inputs", "return_outputs"),
    "compute_ref_log_probs": ("self", "model", "inputs"),
    "_precompute_ref_logps": ("self", "dataset", "name", "batch_size"),
}
_NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})


def _refuse_unsupported_features(args: DPOConfig, needs_reference: bool) -> None:
    refuse_unsupported(
        {
            f"loss_type={list(args.loss_type)!r}": (
                list(args.loss_type) != ["sigmoid"],
                "choose `algorithm` or `preference_loss` instead of TRL's loss_type",
            ),
            "loss_weights": (args.loss_weights is not None, "unset it"),
            "ld_alpha (LD-DPO length desensitization)": (args.ld_alpha is not None, "unset it"),
            f"f_divergence_type={args.f_divergence_type!r}": (args.f_divergence_type != "reverse_kl", "unset it"),
            "use_weighting (WPO)": (args.use_weighting, "unset it"),
            "label_smoothing": (args.label_smoothing != 0.0, "unset it; give smoothing as a loss parameter"),
            "sync_ref_model with a loss that uses no reference": (
                args.sync_ref_model and not needs_reference,
                "unset sync_ref_model",
            ),
        }
    )


class RLPlugDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is an rlplug preference loss on paired data.

    ``algorithm`` is a recipe with ``trainer="paired_preference"`` and a ``preference_loss``.
    TRL's ``beta`` (and any other config field) reaches the loss when the loss has a
    parameter of that name. TRL's own ``loss_type`` and its variants are refused.
    """

    def __init__(self, model: Any, ref_model: Any = None, args: DPOConfig | None = None, *,
                 algorithm: Algorithm, logprob_chunk_size: int | str | None = "auto",
                 **kwargs: Any) -> None:
        check_methods(DPOTrainer, _RELIED_ON)
        if args is None:
            raise ValueError("RLPlugDPOTrainer needs a DPOConfig; rlplug.build_trainer makes one")
        self.components: PreferenceComponents = resolve_preference(algorithm, "paired", args)
        needs_reference = self.components.spec.needs_reference
        _refuse_unsupported_features(args, needs_reference)
        check_datasets(kwargs.get("train_dataset"), kwargs.get("eval_dataset"), "paired", algorithm.name)
        if ref_model is not None and not needs_reference:
            raise ValueError(
                f"preference loss {algorithm.preference_loss!r} uses no reference model; do not pass ref_model"
            )
        skip_copy = skip_reference_copy(args, self.components, model, kwargs.get("peft_config"))
        if skip_copy:
            args.precompute_ref_log_probs = True
        try:
            super().__init__(model=model, ref_model=ref_model, args=args, **kwargs)
        finally:
            if skip_copy:
                args.precompute_ref_log_probs = False
        check_trainer_attributes(self)
        self.logprob_chunk_size = install_chunked_heads(self, 1.0, logprob_chunk_size)
        if not needs_reference:
            self.precompute_ref_logps = False

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if not self.components.spec.needs_reference:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def _reference_logps(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        return self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model, inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        model_kwargs = {key: value for key, value in inputs.items() if key not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens; keep the positions of the real tokens.
        per_token_logps = outputs.log_probs[:, -shift_mask.size(1) :]
        chosen_logps, rejected_logps = per_token_logps.sum(dim=1).chunk(2, dim=0)
        chosen_lengths, rejected_lengths = shift_mask.sum(dim=1).float().chunk(2, dim=0)

        ref_chosen_logps = ref_rejected_logps = None
        if self.components.spec.needs_reference:
            ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)
        batch = PreferenceBatch(
            chosen_logps=chosen_logps,
            rejected_logps=rejected_logps,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            ref_chosen_logps=ref_chosen_logps,
            ref_rejected_logps=ref_rejected_logps,
            chosen_nll=token_mean_nll(chosen_logps, chosen_lengths),
        )
        losses, metrics = self.components.loss(batch)
        check_losses(self.components.loss.name, losses, batch.batch_size)
        loss = losses.mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item())

        log_token_metrics(self, mode, outputs, shift_mask, inputs)
        half = batch.batch_size
        chosen_rows = torch.arange(2 * half, device=shift_mask.device) < half  # the batch is [chosen; rejected]
        log_logit_metrics(self, mode, outputs, shift_mask, chosen_rows, top1=True)
        log_loss_metrics(self, mode, {"logps/chosen": chosen_logps, "logps/rejected": rejected_logps, **metrics})
        if return_outputs:
            return loss, recompute_outputs(model, model_kwargs)
        return loss
