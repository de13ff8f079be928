"""``rlplug train``: train with a config file plus ``--field value`` overrides.

With no arguments it runs the embedded default: GRPO + LoRA on the built-in arithmetic
task with the built-in tiny model, warmed up on first use. Every run ends by writing
``rlplug-summary.json`` and ``reward.png`` to the output directory and printing the
held-out score before and after training.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from rlplug.config import ConfigError, RewardSpec, TrainSettings, parse_train_args

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


class NamedReward:
    """A registered reward function with keyword params bound, named by its registry name.

    TRL logs ``rewards/<name>/mean`` after ``__name__`` (and unwraps functools.partial), so
    the registry name shows in the logs. A plain class keeps it picklable.
    """

    def __init__(self, name: str, function: Callable[..., Any], params: dict[str, Any]) -> None:
        self.__name__ = name
        self.function = function
        self.params = dict(params)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **self.params, **kwargs)


def _reward_function(spec: RewardSpec) -> Callable[..., Any]:
    from rlplug.plugins import get_registry

    function = get_registry().get("reward_functions", spec.name)
    try:
        inspect.signature(function).bind_partial(**spec.params)
    except TypeError as error:
        raise ConfigError(f"rewards: {spec.name!r} does not take params {sorted(spec.params)}: {error}") from None
    if inspect.iscoroutinefunction(function):
        return functools.partial(function, **spec.params) if spec.params else function
    return NamedReward(spec.name, function, spec.params)


def _rewards(settings: TrainSettings) -> tuple[list[Callable[..., Any]], list[float]]:
    from rlplug.data import BUILTIN_TASK_REWARDS

    specs = settings.rlplug.rewards
    if specs is None:
        if not settings.data.is_builtin:
            raise ConfigError("rewards: name at least one reward function, e.g. rewards: [{name: accuracy_math, weight: 1.0}]")
        specs = [RewardSpec(name) for name in BUILTIN_TASK_REWARDS]
    elif "reward_weights" in settings.trainer_fields:
        raise ConfigError("give reward weights once: as `weight` in `rewards`, or TRL's reward_weights, not both")
    weights = settings.trainer_fields.get("reward_weights") or [spec.weight for spec in specs]
    if len(weights) != len(specs):
        raise ConfigError(f"reward_weights has {len(weights)} entries for {len(specs)} reward functions")
    return [_reward_function(spec) for spec in specs], [float(w) for w in weights]


def _trainer_fields(settings: TrainSettings, reward_weights: list[float]) -> dict[str, Any]:
    from rlplug.embedded import embedded_trainer_fields

    user = dict(settings.trainer_fields)
    if settings.rlplug.kl is not None and ({"beta", "use_bias_correction_kl"} & set(user)):
        raise ConfigError("give the KL once: either `kl: {coef: ...}` or TRL's beta / use_bias_correction_kl, not both")
    embedded = (
        embedded_trainer_fields(settings.recipe, user, user_kl_given=settings.rlplug.kl is not None)
        if settings.model.is_builtin
        else {}
    )
    return {**embedded, **user, "reward_weights": reward_weights}


def _set_threads(settings: TrainSettings) -> None:
    import torch

    from rlplug.embedded import EMBEDDED_TORCH_THREADS

    threads = settings.rlplug.torch_threads
    if threads is None and settings.model.is_builtin:
        threads = EMBEDDED_TORCH_THREADS
    if threads is not None:
        torch.set_num_threads(threads)


def prepare_run(settings: TrainSettings) -> PreparedRun:
    """Load the model and data, and build the trainer (nothing is trained yet)."""
    from rlplug.api import build_trainer
    from rlplug.config import parse_structured
    from rlplug.data import load_datasets
    from rlplug.models import load_policy
    from rlplug.warmup import warmed_up_model_dir

    _set_threads(settings)
    reward_funcs, reward_weights = _rewards(settings)
    fields = _trainer_fields(settings, reward_weights)
    model_init_kwargs = parse_structured("model_init_kwargs", fields.pop("model_init_kwargs", None))
    name_or_path = settings.model.model_name_or_path or str(warmed_up_model_dir())
    policy = load_policy(
        name_or_path, settings.model, trust_remote_code=bool(fields.get("trust_remote_code", False)),
        model_init_kwargs=model_init_kwargs,
    )
    train_dataset, eval_dataset = load_datasets(settings.data)
    trainer = build_trainer(
        settings.recipe, model=policy.model, processing_class=policy.tokenizer, peft_config=policy.peft_config,
        reward_funcs=reward_funcs, train_dataset=train_dataset, **fields,
    )
    return PreparedRun(
        settings=settings, trainer=trainer, tokenizer=policy.tokenizer, eval_dataset=eval_dataset,
        reward_funcs=reward_funcs, reward_weights=reward_weights,
        model_label=settings.model.model_name_or_path or "built-in tiny model (warmed up)",
        dataset_label=settings.data.dataset_name or "built-in arithmetic task",
    )


def evaluate(run: PreparedRun) -> float | None:
    """Held-out mean reward of greedy completions (built-in task: exact-match accuracy)."""
    from rlplug.evaluation import mean_greedy_reward

    if run.eval_dataset is None:
        return None
    args = run.trainer.args
    return mean_greedy_reward(
        run.trainer.model, run.tokenizer, run.eval_dataset, run.reward_funcs, run.reward_weights,
        max_new_tokens=args.max_completion_length, batch_size=args.per_device_eval_batch_size,
    )


def _eval_label(run: PreparedRun) -> str:
    count = 0 if run.eval_dataset is None else len(run.eval_dataset)
    metric = "accuracy (exact match)" if run.settings.data.is_builtin else "mean reward"
    return f"held-out {metric} of greedy answers, {count} prompts"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def execute(run: PreparedRun, started: float) -> dict[str, Any]:
    """Evaluate, train, evaluate, save the model, write the report and print the outcome."""
    from rlplug.report import PLOT_FILE, REPORT_SPECS, SUMMARY_FILE, ReportSpec, write_report

    trainer, recipe = run.trainer, run.settings.recipe
    eval_before = evaluate(run)
    train_start = time.perf_counter()
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    train_seconds = time.perf_counter() - train_start
    eval_after = evaluate(run)
    output_dir = trainer.args.output_dir
    trainer.save_model(output_dir)
    components = getattr(trainer, "components", None)
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
            "advantage": recipe.advantage, "policy_loss": recipe.policy_loss, "aggregation": recipe.aggregation,
            "kl": {"estimator": recipe.kl.estimator, "placement": recipe.kl.placement,
                   "coef": components.kl.coef if components is not None else recipe.kl.coef},
        },
        "rewards": [{"name": getattr(f, "__name__", str(f)), "weight": w} for f, w in zip(run.reward_funcs, run.reward_weights)],
    }
    spec = REPORT_SPECS.get(recipe.trainer) or ReportSpec(headline={"loss": "loss"}, panels=(("loss", "training loss"),))
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
    from rlplug.registry import RegistryError
    from rlplug.resolve import ComponentConfigError

    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, (ConfigError, RegistryError, ComponentConfigError)):
        return text
    return f"{type(error).__name__}: {text} (rerun with --debug for the traceback)"


def _is_config_error(error: BaseException) -> bool:
    from rlplug.registry import RegistryError

    return isinstance(error, (ConfigError, RegistryError, ValueError, NotImplementedError))


def main(argv: list[str] | None = None) -> int:
    """Run ``rlplug train``; returns the exit status (2 for a bad config, 1 for a failed run)."""
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
        run = prepare_run(settings)
        stage = "training"
        execute(run, started)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print("rlplug train: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"rlplug train: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_CONFIG if stage == "config" and _is_config_error(error) else EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
