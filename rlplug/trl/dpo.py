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
from rlplug.components.sequence_logps import ld_sequence_logps, wpo_pair_weights
from rlplug.core.resolve import PreferenceComponents
from rlplug.trl.chunked_forward import install_chunked_heads
from rlplug.trl.compat import check_methods, refuse_unsupported
from rlplug.trl.preference_common import (
    ReferenceFreePrecompute,
    check_datasets,
    check_losses,
    check_reference_model,
    check_trainer_attributes,
    log_logit_metrics,
    log_loss_metrics,
    log_token_metrics,
    recompute_outputs,
    reference_copy_skipped,
    sync_ref_model_refusal,
)
from rlplug.trl.trl_loss_types import DPO_LOSS_TYPES, resolve_trl_preference, trl_name_of
from rlplug.trl.segments import SEGMENT_KEYS, build_segment_batch, use_segments

_RELIED_ON = {
    "_compute_loss": ("self", "model", "inputs", "return_outputs"),
    "compute_ref_log_probs": ("self", "model", "inputs"),
    "_precompute_ref_logps": ("self", "dataset", "name", "batch_size"),
}
_NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})


def _refuse_unsupported_features(args: DPOConfig, components: PreferenceComponents) -> None:
    reads = components.loss.params
    refuse_unsupported(
        {
            f"f_divergence_type={args.f_divergence_type!r} with preference loss {components.loss.name!r}": (
                args.f_divergence_type != "reverse_kl" and "f_divergence_type" not in reads,
                "this loss has no f-divergence form; unset f_divergence_type",
            ),
            f"label_smoothing with preference loss {components.loss.name!r}": (
                args.label_smoothing != 0.0 and "label_smoothing" not in reads,
                "this loss reads no label_smoothing; unset it",
            ),
            **sync_ref_model_refusal(args, components),
        }
    )


class RLPlugDPOTrainer(ReferenceFreePrecompute, DPOTrainer):
    """DPOTrainer whose loss is an rlplug preference loss on paired data.

    ``algorithm`` is a recipe with ``trainer="paired_preference"`` and a ``preference_loss``.
    TRL's ``beta`` (and any other config field) reaches the loss when the loss has a
    parameter of that name. TRL's ``loss_type``/``loss_weights`` pick the matching rlplug loss
    (rlplug/trl/trl_loss_types.py); ``ld_alpha`` and ``use_weighting`` work as in TRL.
    """

    def __init__(self, model: Any, ref_model: Any = None, args: DPOConfig | None = None, *,
                 algorithm: Algorithm, logprob_chunk_size: int | str | None = "auto",
                 **kwargs: Any) -> None:
        check_methods(DPOTrainer, _RELIED_ON)
        if args is None:
            raise ValueError("RLPlugDPOTrainer needs a DPOConfig; rlplug.build_trainer makes one")
        self.components: PreferenceComponents = resolve_trl_preference(
            algorithm, "paired", args, DPO_LOSS_TYPES, "sigmoid"
        )
        _refuse_unsupported_features(args, self.components)
        check_datasets(kwargs.get("train_dataset"), kwargs.get("eval_dataset"), "paired", algorithm.name)
        check_reference_model(ref_model, self.components, algorithm.preference_loss)
        # TRL's own checks of its loss_type (e.g. no WPO weighting with the sorting AOT losses) see the chosen loss.
        user_loss_type, trl_name = args.loss_type, trl_name_of(self.components.loss.name, DPO_LOSS_TYPES)
        args.loss_type = [trl_name] if trl_name is not None and args.loss_weights is None else user_loss_type
        try:
            with reference_copy_skipped(args, self.components, model, kwargs.get("peft_config")):
                super().__init__(model=model, ref_model=ref_model, args=args, **kwargs)
        finally:
            args.loss_type = user_loss_type
        check_trainer_attributes(self)
        if self.components.spec.needs_segments:
            use_segments(self)
        self.logprob_chunk_size = install_chunked_heads(self, 1.0, logprob_chunk_size)
        if not self.components.spec.needs_reference:
            self.precompute_ref_logps = False

    def _reference_logps(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        return self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model, inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        model_kwargs = {key: value for key, value in inputs.items() if key not in _NON_MODEL_KEYS | SEGMENT_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens; keep the positions of the real tokens.
        per_token_logps = outputs.log_probs[:, -shift_mask.size(1) :]
        chosen_logps, rejected_logps = ld_sequence_logps(per_token_logps, shift_mask, self.args.ld_alpha).chunk(2)
        chosen_lengths, rejected_lengths = shift_mask.sum(dim=1).float().chunk(2, dim=0)
        chosen_token_logps_sum = per_token_logps.sum(dim=1).chunk(2, dim=0)[0]

        ref_chosen_logps = ref_rejected_logps = segments = None
        if self.components.spec.needs_segments:
            segments, ref_chosen_logps, ref_rejected_logps = build_segment_batch(
                self, inputs, model_kwargs, labels, per_token_logps)
        elif self.components.spec.needs_reference:
            ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)
        batch = PreferenceBatch(
            chosen_logps=chosen_logps,
            rejected_logps=rejected_logps,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            ref_chosen_logps=ref_chosen_logps,
            ref_rejected_logps=ref_rejected_logps,
            chosen_nll=token_mean_nll(chosen_token_logps_sum, chosen_lengths),
            segments=segments,
        )
        losses, metrics = self.components.loss(batch)
        check_losses(self.components.loss.name, losses, batch.batch_size)
        if self.args.use_weighting:
            log_sum_sq_probs = outputs.log_sum_sq_probs[:, -shift_mask.size(1) :]
            losses = losses * wpo_pair_weights(per_token_logps, log_sum_sq_probs, shift_mask)
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
