"""The unpaired-preference adapter: TRL's KTOTrainer with the loss from an rlplug preference loss.

Tokenization, unpairing of paired rows, the mismatched (prompt, completion) pairs for the
KL reference point, reference handling, logging and checkpoints are TRL's. Only
``_compute_loss`` is replaced. TRL builds the mismatched pairs when its ``loss_type``
estimates a KL term; the adapter sets ``loss_type`` to ``"kto"`` when the rlplug loss
declared ``needs_kl_reference`` and to ``"apo_zero_unpaired"`` (TRL's KL-free type)
otherwise, so neither the pairs nor their forward passes exist when nothing reads them.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import KTOConfig, KTOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from rlplug.core.algorithm import Algorithm
from rlplug.core.preference import PreferenceBatch
from rlplug.core.resolve import PreferenceComponents
from rlplug.trl.chunked_forward import install_chunked_heads
from rlplug.trl.compat import TRLCompatibilityError, check_methods, refuse_unsupported
from rlplug.trl.preference_common import (
    TRAINER_ATTRIBUTES,
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
from rlplug.trl.trl_loss_types import KTO_LOSS_TYPES, resolve_trl_preference

_RELIED_ON = {
    "_compute_loss": ("self", "model", "inputs", "return_outputs"),
    "_compute_kl_logps": ("self", "model", "batch"),
    "_precompute_ref_logps": ("self", "dataset", "name", "batch_size"),
}
_NON_MODEL_KEYS = frozenset(
    {
        "completion_mask", "KL_input_ids", "KL_attention_mask", "KL_completion_mask", "KL_token_type_ids",
        "KL_mm_token_type_ids", "label", "ref_logps", "ref_KL_logps",
    }
)
_TRL_LOSS_TYPE = {True: "kto", False: "apo_zero_unpaired"}


class RLPlugKTOTrainer(ReferenceFreePrecompute, KTOTrainer):
    """KTOTrainer whose loss is an rlplug preference loss on unpaired, labelled data.

    ``algorithm`` is a recipe with ``trainer="unpaired_preference"`` and a ``preference_loss``.
    TRL's ``beta``, ``desirable_weight`` and ``undesirable_weight`` reach the loss by name;
    TRL's ``loss_type`` picks the matching rlplug loss (rlplug/trl/trl_loss_types.py).
    """

    def __init__(self, model: Any, ref_model: Any = None, args: KTOConfig | None = None, *,
                 algorithm: Algorithm, logprob_chunk_size: int | str | None = "auto",
                 **kwargs: Any) -> None:
        check_methods(KTOTrainer, _RELIED_ON)
        if args is None:
            raise ValueError("RLPlugKTOTrainer needs a KTOConfig; rlplug.build_trainer makes one")
        self.components: PreferenceComponents = resolve_trl_preference(
            algorithm, "unpaired", args, KTO_LOSS_TYPES, "kto"
        )
        spec = self.components.spec
        refuse_unsupported(
            {
                **sync_ref_model_refusal(args, self.components),
            }
        )
        check_datasets(kwargs.get("train_dataset"), kwargs.get("eval_dataset"), "unpaired", algorithm.name)
        check_reference_model(ref_model, self.components, algorithm.preference_loss)
        args.loss_type = _TRL_LOSS_TYPE[spec.needs_kl_reference]
        with reference_copy_skipped(args, self.components, model, kwargs.get("peft_config")):
            super().__init__(model=model, ref_model=ref_model, args=args, **kwargs)
        check_trainer_attributes(self, (*TRAINER_ATTRIBUTES, "calculate_KL"))
        self.logprob_chunk_size = install_chunked_heads(self, 1.0, logprob_chunk_size)
        if self.calculate_KL != spec.needs_kl_reference:
            raise TRLCompatibilityError(
                f"TRL's KTOTrainer set calculate_KL={self.calculate_KL} for loss_type={args.loss_type!r}; rlplug "
                f"needs mismatched KL pairs exactly when the loss reads kl_reference ({spec.needs_kl_reference})"
            )
        if not spec.needs_reference:
            self.precompute_ref_logps = False

    def _reference_logps(self, batch: dict[str, Any], model_kwargs: dict[str, Any], labels: torch.Tensor):
        """(ref log-probs (B,), ref log-probs of the mismatched pairs (B,) or None), as KTOTrainer gets them."""
        if self.precompute_ref_logps:
            return batch["ref_logps"], batch.get("ref_KL_logps")
        ref_kwargs = {key: value for key, value in model_kwargs.items() if key != "output_router_logits"}
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            ref_model = self.model
            context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        else:
            ref_model, context = self.ref_model, contextlib.nullcontext()
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            with context:
                ref_kl_logps = self._compute_kl_logps(ref_model, batch)
                ref_outputs = ref_model(**ref_kwargs, labels=labels, fused_lm_head=True)
        ref_logps = ref_outputs.log_probs[:, -(labels.size(1) - 1) :].sum(-1)
        return ref_logps, ref_kl_logps

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        spec = self.components.spec
        batch = {k: (v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        kl_logps = self._compute_kl_logps(model, batch) if spec.needs_kl_reference else None

        model_kwargs = {key: value for key, value in batch.items() if key not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        shift_mask = batch["completion_mask"][:, 1:]
        logps = outputs.log_probs[:, -shift_mask.size(1) :].sum(-1)

        ref_logps = kl_reference = None
        if spec.needs_reference:
            ref_logps, ref_kl_logps = self._reference_logps(batch, model_kwargs, labels)
            if spec.needs_kl_reference:
                kl_reference = self.accelerator.gather_for_metrics((kl_logps - ref_kl_logps).mean().detach()).mean()
        preference_batch = PreferenceBatch(
            logps=logps,
            lengths=shift_mask.sum(-1).float(),
            ref_logps=ref_logps,
            labels=torch.as_tensor(batch["label"], dtype=torch.bool, device=logps.device),
            kl_reference=kl_reference,
        )
        losses, metrics = self.components.loss(preference_batch)
        check_losses(self.components.loss.name, losses, preference_batch.batch_size)
        loss = losses.nanmean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(outputs.aux_loss).mean().item())

        log_token_metrics(self, mode, outputs, shift_mask, batch)
        desirable = preference_batch.labels
        log_logit_metrics(self, mode, outputs, shift_mask, desirable, top1=False)
        nan = torch.full_like(logps, float("nan"))
        logged = log_loss_metrics(
            self,
            mode,
            {
                "logps/chosen": torch.where(desirable, logps.detach(), nan),
                "logps/rejected": torch.where(desirable, nan, logps.detach()),
                **metrics,
            },
        )
        # As KTOTrainer: the margin of unpaired data is the difference of the two class means.
        if "rewards/margins" not in metrics and {"rewards/chosen", "rewards/rejected"} <= logged.keys():
            self._metrics[mode]["rewards/margins"].append(logged["rewards/chosen"] - logged["rewards/rejected"])
        if return_outputs:
            return loss, recompute_outputs(model, model_kwargs)
        return loss
