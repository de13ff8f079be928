"""What the two preference adapters share: data checks, the reference-free set-up,
TRL-style metric logging and TRL attribute checks."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from accelerate.utils import is_peft_model

from rlplug.core.preference import PreferenceData, check_preference_columns
from rlplug.core.resolve import PreferenceComponents
from rlplug.trl.compat import TESTED_TRL_MINOR, TRLCompatibilityError


def check_datasets(train_dataset: Any, eval_dataset: Any, data: PreferenceData, algorithm: str) -> None:
    """Refuse datasets without the preference columns, before TRL tokenizes them."""
    datasets = [train_dataset]
    datasets += list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset]
    for dataset in datasets:
        if dataset is not None:
            columns = getattr(dataset, "column_names", None) or list(next(iter(dataset)))
            check_preference_columns(columns, data, algorithm)


def skip_reference_copy(trainer_args: Any, components: PreferenceComponents, model: Any, peft_config: Any) -> bool:
    """Whether TRL must be kept from loading a reference copy, for a loss that needs none.

    TRL loads a reference copy for full fine-tuning unless ``precompute_ref_log_probs``;
    the adapter sets that flag for the duration of ``__init__`` and overrides
    ``_precompute_ref_logps`` to compute nothing. The one cost left is TRL hashing the
    policy's weights once (its cache key for precomputed log-probs). With PEFT no copy is
    made anyway, so the flag is left alone.
    """
    if components.spec.needs_reference or trainer_args.precompute_ref_log_probs:
        return False
    return peft_config is None and (isinstance(model, str) or not is_peft_model(model))


@contextmanager
def reference_copy_skipped(trainer_args: Any, components: PreferenceComponents, model: Any,
                           peft_config: Any) -> Iterator[None]:
    """Around TRL's ``__init__``: keep it from loading a reference copy nothing reads
    (see :func:`skip_reference_copy`); the user's config is restored afterwards."""
    skip_copy = skip_reference_copy(trainer_args, components, model, peft_config)
    if skip_copy:
        trainer_args.precompute_ref_log_probs = True
    try:
        yield
    finally:
        if skip_copy:
            trainer_args.precompute_ref_log_probs = False


def check_reference_model(ref_model: Any, components: PreferenceComponents, loss_name: str | None) -> None:
    """Refuse a reference model given to a loss that uses none."""
    if ref_model is not None and not components.spec.needs_reference:
        raise ValueError(f"preference loss {loss_name!r} uses no reference model; do not pass ref_model")


def sync_ref_model_refusal(trainer_args: Any, components: PreferenceComponents) -> dict[str, tuple[bool, str]]:
    """The ``refuse_unsupported`` entry both adapters share: syncing a reference nothing reads."""
    return {
        "sync_ref_model with a loss that uses no reference": (
            trainer_args.sync_ref_model and not components.spec.needs_reference,
            "unset sync_ref_model",
        )
    }


class ReferenceFreePrecompute:
    """Mixin for a TRL preference trainer: a loss without a reference precomputes nothing."""

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if not self.components.spec.needs_reference:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)


def log_loss_metrics(trainer: Any, mode: str, metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Log each metric's NaN-mean over the global batch, in a fixed order on every process.

    A metric that is NaN for the whole global batch (say, rewards of desirable completions
    in a batch without any) is not logged. Returns what was logged.
    """
    logged = {}
    for name in sorted(metrics):
        value = metrics[name].detach().float()
        gathered = trainer.accelerator.gather_for_metrics(value.reshape(-1))
        if gathered.numel() and not torch.isnan(gathered).all():
            logged[name] = gathered.nanmean().item()
            trainer._metrics[mode][name].append(logged[name])
    return logged


def log_token_metrics(trainer: Any, mode: str, outputs: Any, shift_mask: torch.Tensor, inputs: dict) -> None:
    """Entropy and token count, as TRL's preference trainers log them."""
    seq_len = shift_mask.size(1)
    entropy_sum = (outputs.entropy[:, -seq_len:].detach() * shift_mask).sum()
    # Per-process totals, gathered whole: gather_for_metrics would trim dim 0 to the number of
    # leftover samples on an epoch's uneven last batch, cutting the [sum, count] pair.
    totals = trainer.accelerator.gather(torch.stack([entropy_sum, shift_mask.sum().to(entropy_sum)]))
    totals = totals.reshape(-1, 2).sum(0)
    trainer._metrics[mode]["entropy"].append((totals[0] / totals[1]).item() if totals[1] > 0 else 0.0)
    if mode == "train":
        tokens = trainer.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
        trainer._total_train_tokens += tokens // trainer._tp_size
    trainer._metrics[mode]["num_tokens"] = [trainer._total_train_tokens]


def log_logit_metrics(
    trainer: Any, mode: str, outputs: Any, shift_mask: torch.Tensor, chosen_rows: torch.Tensor, top1: bool
) -> None:
    """``logits/chosen``, ``logits/rejected`` (mean logit over completion tokens) and, with
    ``top1``, ``mean_token_accuracy`` of the chosen completions, as TRL logs them."""
    seq_len = shift_mask.size(1)
    mean_logits = outputs.mean_logits[:, -seq_len:]
    gather = trainer.accelerator.gather_for_metrics
    for name, rows in (("chosen", chosen_rows), ("rejected", ~chosen_rows)):
        mask = shift_mask[rows].bool()
        total = gather(mean_logits[rows][mask].sum()).sum().item()
        count = gather(mask.sum()).sum().item()
        if count > 0:
            trainer._metrics[mode][f"logits/{name}"].append(total / count)
    if top1:
        mask = shift_mask[chosen_rows].bool()
        correct = gather((outputs.is_top1[:, -seq_len:][chosen_rows] & mask).sum()).sum()
        count = gather(mask.sum()).sum()
        trainer._metrics[mode]["mean_token_accuracy"].append((correct / count).item() if count > 0 else 0.0)


TRAINER_ATTRIBUTES = ("ref_model", "precompute_ref_logps", "aux_loss_enabled", "_metrics", "_total_train_tokens",
                      "_tp_size")


def check_trainer_attributes(trainer: Any, names: tuple[str, ...] = TRAINER_ATTRIBUTES) -> None:
    """Fail at construction when TRL stopped setting an attribute ``_compute_loss`` reads."""
    missing = [name for name in names if not hasattr(trainer, name)]
    if missing:
        import trl

        raise TRLCompatibilityError(
            f"TRL {trl.__version__}: {type(trainer).__name__} no longer sets {', '.join(missing)}; "
            f"rlplug needs TRL {TESTED_TRL_MINOR}.x (pip install 'trl=={TESTED_TRL_MINOR}.*')"
        )


def check_losses(name: str, losses: torch.Tensor, batch_size: int) -> None:
    if losses.shape != (batch_size,):
        raise ValueError(
            f"preference loss {name!r} returned losses of shape {tuple(losses.shape)}, expected ({batch_size},)"
        )


def recompute_outputs(model: Any, model_kwargs: dict[str, Any]) -> Any:
    """TRL's deprecated ``return_outputs=True``: the logits, from one extra forward pass."""
    warnings.warn(
        "return_outputs=True recomputes the logits with an extra forward pass (TRL's fused LM head does not "
        "build them)",
        FutureWarning,
        stacklevel=3,
    )
    with torch.no_grad():
        return model(**model_kwargs)
