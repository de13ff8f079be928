"""``rlplug train``: train with a config file plus ``--field value`` overrides.

With no arguments it runs the embedded default: GRPO + LoRA on the built-in arithmetic
task with the built-in tiny model, warmed up on first use. Every run ends by writing
``rlplug-summary.json`` and ``reward.png`` to the output directory and printing the
held-out score before and after training.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from rlplug.app.builtin_task import BuiltinTask, NoBuiltinTask, require
from rlplug.app.config import ConfigError, RewardSpec, TrainSettings, parse_train_args
from rlplug.app.preemption import Preempted, PreemptionCallback

EXIT_BAD_CONFIG = 2
EXIT_FAILED = 1


@dataclass
class PreparedRun:
    """A built trainer and what the end-of-run report needs."""

    settings: TrainSettings
    trainer: Any
    tokenizer: Any
    eval_dataset: Any
    reward_funcs: list[Callable[..., Any]]
    reward_weights: list[float]
    model_label: str
    dataset_label: str
    metric_label: str
    preemption: PreemptionCallback


def _reward_entries(settings: TrainSettings, builtin: BuiltinTask | None) -> tuple[list[dict[str, Any]], list[float]]:
    """Reward entries for rlplug.components.rewards (name + params) and their weights."""
    from rlplug.core.plugins import get_registry

    specs = settings.rlplug.rewards
    if specs is None:
        if not settings.data.is_builtin and _takes_reward_funcs(settings):
            raise ConfigError("rewards: name at least one reward function, e.g. rewards: [{name: accuracy_math, weight: 1.0}]")
        builtin_rewards = require(builtin, "dataset_name").rewards if settings.data.is_builtin else ()
        specs = [RewardSpec(name) for name in builtin_rewards]
    elif "reward_weights" in settings.trainer_fields:
        raise ConfigError("give reward weights once: as `weight` in `rewards`, or TRL's reward_weights, not both")
    for spec in specs:  # unknown names fail here, before any model loads
        get_registry().get("reward_functions", spec.name)
    weights = settings.trainer_fields.get("reward_weights") or [spec.weight for spec in specs]
    if len(weights) != len(specs):
        raise ConfigError(f"reward_weights has {len(weights)} entries for {len(specs)} reward functions")
    return [{"name": spec.name, **spec.params} for spec in specs], [float(w) for w in weights]


def _takes_reward_funcs(settings: TrainSettings) -> bool:
    from rlplug.trl.build import trainer_kind_of

    return trainer_kind_of(settings.recipe).takes_reward_funcs


def _trainer_fields(settings: TrainSettings, reward_weights: list[float], builtin: BuiltinTask | None) -> dict[str, Any]:
    """The trainer-config fields: the built-in task's defaults (built-in model only) under the user's."""
    from rlplug.trl.build import trainer_kind_of

    user = dict(settings.trainer_fields)
    if settings.rlplug.kl is not None and ({"beta", "use_bias_correction_kl"} & set(user)):
        raise ConfigError("give the KL once: either `kl: {coef: ...}` or TRL's beta / use_bias_correction_kl, not both")
    embedded = (
        require(builtin, "model_name_or_path").trainer_fields(
            settings.recipe, trainer_kind_of(settings.recipe), user, settings.rlplug.kl is not None
        )
        if settings.model.is_builtin
        else {}
    )
    fields = {**embedded, **user}
    if "use_cpu" not in user and not _has_accelerator():
        # transformers sets up gloo across torchrun/accelerate processes only when told it runs on CPU
        fields["use_cpu"] = True
    if _takes_reward_funcs(settings):
        fields["reward_weights"] = reward_weights
    return fields


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available() or (
        hasattr(torch, "xpu") and torch.xpu.is_available()
    )


def _set_threads(settings: TrainSettings, builtin: BuiltinTask | None) -> None:
    import torch

    threads = settings.rlplug.torch_threads
    if threads is None and settings.model.is_builtin:
        threads = require(builtin, "model_name_or_path").torch_threads
    if threads is not None:
        torch.set_num_threads(threads)


def prepare_run(settings: TrainSettings, builtin: BuiltinTask | None = None) -> PreparedRun:
    """Load the model and data, and build the trainer (nothing is trained yet).

    ``builtin`` is the task used where the config names no model or dataset.
    """
    from rlplug.app.config import parse_structured
    from rlplug.app.data import load_datasets, load_pretraining_dataset
    from rlplug.app.models import load_policy
    from rlplug.app.memory_estimate import memory_line
    from rlplug.components.rewards import build_reward_functions
    from rlplug.trl.build import build_trainer

    _set_threads(settings, builtin)
    reward_entries, reward_weights = _reward_entries(settings, builtin)
    fields = _trainer_fields(settings, reward_weights, builtin)
    model_init_kwargs = parse_structured("model_init_kwargs", fields.pop("model_init_kwargs", None))
    name_or_path = settings.model.model_name_or_path or str(require(builtin, "model_name_or_path").model_dir())
    policy = load_policy(
        name_or_path, settings.model, trust_remote_code=bool(fields.get("trust_remote_code", False)),
        model_init_kwargs=model_init_kwargs,
    )
    train_dataset, eval_dataset = load_datasets(settings.data, settings.recipe, policy.model, policy.tokenizer, builtin)
    online = _takes_reward_funcs(settings)
    trainer_inputs = {}
    if float({**settings.recipe.config_defaults, **fields}.get("ptx_coef") or 0.0) > 0:  # PPO-ptx's pretraining term
        trainer_inputs["ptx_dataset"] = load_pretraining_dataset(settings.data, builtin)
    trainer = build_trainer(
        settings.recipe, model=policy.model, processing_class=policy.tokenizer, peft_config=policy.peft_config,
        reward_funcs=reward_entries if online else None, train_dataset=train_dataset,
        trainer_inputs=trainer_inputs or None, on_nonfinite=settings.rlplug.on_nonfinite,
        logprob_chunk_size=settings.rlplug.logprob_chunk_size, **fields,
    )
    print(memory_line(trainer))
    preemption = PreemptionCallback()
    trainer.add_callback(preemption)
    # Held-out scoring uses the same rewards; a preference trainer has none of its own.
    reward_funcs = list(trainer.reward_funcs) if online else build_reward_functions(reward_entries)[0]
    return PreparedRun(
        settings=settings, trainer=trainer, tokenizer=policy.tokenizer, eval_dataset=eval_dataset,
        reward_funcs=reward_funcs, reward_weights=reward_weights,
        model_label=settings.model.model_name_or_path or builtin.model_label,
        dataset_label=settings.data.dataset_name or builtin.dataset_label,
        metric_label=builtin.metric_label if settings.data.is_builtin else "mean reward",
        preemption=preemption,
    )


def evaluate(run: PreparedRun) -> float | None:
    """Held-out mean reward of greedy completions (built-in task: exact-match accuracy)."""
    from rlplug.app.evaluation import mean_greedy_reward

    if run.eval_dataset is None:
        return None
    args = run.trainer.args
    return mean_greedy_reward(
        run.trainer.model, run.tokenizer, run.eval_dataset, run.reward_funcs, run.reward_weights,
        max_new_tokens=getattr(args, "max_completion_length", None) or args.max_length,
        batch_size=args.per_device_eval_batch_size,
    )


def _eval_label(run: PreparedRun) -> str:
    count = 0 if run.eval_dataset is None else len(run.eval_dataset)
    return f"held-out {run.metric_label} of greedy answers, {count} prompts"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def execute(run: PreparedRun, started: float) -> dict[str, Any]:
    """Evaluate, train, evaluate, save the model, write the report and print the outcome."""
    from rlplug.app.report import PLOT_FILE, SUMMARY_FILE, ReportSpec, write_report
    from rlplug.trl.build import trainer_kind_of

    trainer, recipe = run.trainer, run.settings.recipe
    eval_before = evaluate(run)
    train_start = time.perf_counter()
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    run.preemption.raise_if_stopped(trainer.args.output_dir)
    train_seconds = time.perf_counter() - train_start
    eval_after = evaluate(run)
    output_dir = trainer.args.output_dir
    trainer.save_model(output_dir)
    trainer.state.save_to_json(f"{output_dir}/trainer_state.json")  # the full log history, as in checkpoints
    fields = {
        "algorithm": recipe.name,
        "steps": trainer.state.global_step,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "train_seconds": round(train_seconds, 2),
        "eval_before": eval_before,
        "eval_after": eval_after,
        "eval_metric": _eval_label(run),
        "model": run.model_label,
        "dataset": run.dataset_label,
        "seed": trainer.args.seed,
        "components": {
            # The components in use: TRL's fields (scale_rewards, multi_objective_aggregation, loss_type) may
            # have replaced the recipe's.
            "advantage": getattr(getattr(getattr(trainer, "components", None), "advantage", None), "name", recipe.advantage),
            "policy_loss": recipe.policy_loss, "aggregation": recipe.aggregation,
            "sampling_corrections": [c.name for c in getattr(trainer, "sampling_corrections", [])],
            "dynamic_sampling": None if recipe.dynamic_sampling is None else vars(recipe.dynamic_sampling),
            "preference_loss": getattr(getattr(trainer, "components", None), "algorithm", recipe).preference_loss,
            "kl": {"estimator": recipe.kl.estimator, "placement": recipe.kl.placement,
                   "coef": getattr(trainer, "current_kl", recipe.kl).coef},
        },
        "rewards": [{"name": getattr(f, "__name__", str(f)), "weight": w} for f, w in zip(run.reward_funcs, run.reward_weights)],
    }
    kind = trainer_kind_of(recipe)
    spec = ReportSpec(headline=kind.report_headline, panels=kind.report_panels)
    title = f"rlplug {recipe.name}: {run.model_label} on {run.dataset_label}"
    summary = write_report(output_dir, trainer.state.log_history, spec, fields, title)

    print(f"rlplug: {recipe.name}, {summary['steps']} steps, {train_seconds:.0f} s of training, {summary['wall_seconds']:.0f} s in all")
    for name in spec.headline:
        first, last = summary[f"{name}_first"], summary[f"{name}_last"]
        print(f"rlplug: {name} {_fmt(first)} (first 10% of logged steps) -> {_fmt(last)} (last 10%)")
    if eval_before is not None:
        print(f"rlplug: {_eval_label(run)}: before {eval_before:.3f} -> after {eval_after:.3f} ({eval_after - eval_before:+.3f})")
    print(f"rlplug: wrote {output_dir}/{SUMMARY_FILE} and {output_dir}/{PLOT_FILE}")
    return summary


def _one_line(error: BaseException) -> str:
    from rlplug.core.registry import RegistryError
    from rlplug.core.resolve import ComponentConfigError

    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (ConfigError, RegistryError, ComponentConfigError, NoBuiltinTask)):
        return text
    return f"{type(error).__name__}: {text} (rerun with --debug for the traceback)"


def _is_config_error(error: BaseException) -> bool:
    from rlplug.core.registry import RegistryError

    return isinstance(error, (ConfigError, RegistryError, ValueError, NotImplementedError))


def main(argv: list[str] | None = None, builtin: BuiltinTask | None = None) -> int:
    """Run ``rlplug train``; returns the exit status (2 for a bad config, 1 for a failed run).

    ``builtin`` is the task run where the config names no model or dataset (the ``rlplug``
    command passes the demo's).
    """
    started = time.perf_counter()
    # bitsandbytes warns at import on every CPU run that an optional 4-bit CPU kernel package is missing.
    logging.getLogger("bitsandbytes.backends.cpu").setLevel(logging.ERROR)
    # TRL 1.16 itself calls the renamed transformers API; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [token for token in argv if token != "--debug"]
    stage = "config"
    try:
        settings = parse_train_args(argv)
        run = prepare_run(settings, builtin)
        stage = "training"
        execute(run, started)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except Preempted as stop:
        print(f"rlplug train: {stop}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("rlplug train: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"rlplug train: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_CONFIG if stage == "config" and _is_config_error(error) else EXIT_FAILED
    return 0
