"""Rewards from a config: names + weights + params -> TRL ``reward_funcs`` and ``reward_weights``.

A config lists rewards as ``[{name: accuracy_math, weight: 1.0}, {name: format_think,
weight: 0.2, think_tag: reasoning}]``. Keys other than ``name``, ``weight`` and
``log_name`` are the reward's params (a nested ``params:`` mapping works too). A
reward's params are its keyword-only arguments; each is bound from the entry, else from
the trainer config's field of the same name (so ``max_completion_length`` reaches
``overlong_penalty``), else its default.

Every bound reward is wrapped in :class:`GuardedReward`, which decides what happens when
a reward function misbehaves:

- it raises: the batch is scored again one completion at a time; completions whose call
  raises become None (unscorable: NaN reward, advantage 0 through the estimator's NaN
  handling), the count goes to TRL's ``log_metric`` as ``rewards/<name>/errors``, a
  warning names the function and the first error, and training continues;
- it returns NaN or +-inf for a completion: that value becomes None, counted as
  ``rewards/<name>/nonfinite``; a value that is not a number counts as an error;
- it returns the wrong number of values: :class:`RewardFunctionError` naming the
  function. That is a bug in the function, not a property of one sample, and any
  guess would misalign rewards with completions, so training stops.

This module also trains reward models with TRL's RewardTrainer (Bradley-Terry):
:func:`train_reward_model`, and ``python -m rlplug.rewards --output_dir DIR``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from rlplug.plugins import get_registry

logger = logging.getLogger(__name__)

RewardSpec = str | Callable[..., Any] | Mapping[str, Any]

# Arguments TRL passes to every reward function; never bound from a config.
_PASSED_BY_TRAINER = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
_SPEC_KEYS = frozenset({"name", "weight", "log_name", "params"})


class RewardConfigError(ValueError):
    """A reward entry in the config is malformed."""


class RewardFunctionError(ValueError):
    """A reward function broke its contract in a way that cannot be scored around."""


def _discard(*args: Any, **kwargs: Any) -> None:
    return None


class GuardedReward:
    """A reward function with bound params, isolating samples it fails on (see the module docstring).

    Picklable when the wrapped function is (TRL forwards reward functions to spawned
    rollout workers). ``__name__`` is the name TRL logs under. ``error_count`` and
    ``nonfinite_count`` add up over the object's life.
    """

    def __init__(self, fn: Callable[..., Any], name: str, params: Mapping[str, Any] | None = None) -> None:
        self.fn = fn
        self.params = dict(params or {})
        self.__name__ = name
        self.error_count = 0
        self.nonfinite_count = 0

    def __repr__(self) -> str:
        return f"GuardedReward({self.__name__!r}, params={self.params!r})"

    def _call(self, prompts: list[Any], completions: list[Any], kwargs: dict[str, Any]) -> Any:
        return self.fn(prompts, completions, **{**self.params, **kwargs})

    def _one_by_one(self, prompts: list[Any], completions: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], list[BaseException]]:
        size = len(completions)
        values: list[Any] = []
        errors: list[BaseException] = []
        for i in range(size):
            sample_kwargs = {
                key: value[i : i + 1] if isinstance(value, list) and len(value) == size else value
                for key, value in kwargs.items()
            }
            # One call per sample would log one metric/extra column per sample: drop them.
            sample_kwargs.update({key: _discard for key in ("log_extra", "log_metric") if key in kwargs})
            try:
                output = list(self._call(prompts[i : i + 1], completions[i : i + 1], sample_kwargs))
                if len(output) != 1:
                    raise RewardFunctionError(f"returned {len(output)} values for 1 completion")
                values.append(output[0])
            except Exception as exc:
                values.append(None)
                errors.append(exc)
        return values, errors

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        size = len(completions)
        errors: list[BaseException] = []
        try:
            values = self._call(prompts, completions, kwargs)
        except Exception:
            values, errors = self._one_by_one(prompts, completions, kwargs)
        if not hasattr(values, "__len__") or isinstance(values, (str, bytes)):
            raise RewardFunctionError(
                f"reward function {self.__name__!r} returned {type(values).__name__}; it must return a list with "
                f"one float or None per completion"
            )
        if len(values) != size:
            raise RewardFunctionError(
                f"reward function {self.__name__!r} returned {len(values)} values for {size} completions; it must "
                f"return one float or None per completion"
            )
        rewards: list[float | None] = []
        nonfinite = 0
        for value in values:
            if value is None:
                rewards.append(None)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
                rewards.append(None)
                continue
            if math.isfinite(number):
                rewards.append(number)
            else:
                nonfinite += 1
                rewards.append(None)
        self._report(errors, nonfinite, size, kwargs.get("log_metric"))
        return rewards

    def _report(self, errors: list[BaseException], nonfinite: int, size: int, log_metric: Any) -> None:
        self.error_count += len(errors)
        self.nonfinite_count += nonfinite
        if errors:
            first = errors[0]
            logger.warning(
                "reward function %r failed on %d of %d completions; they are unscorable (NaN reward, advantage 0). "
                "First error: %s: %s", self.__name__, len(errors), size, type(first).__name__, first,
            )
        if callable(log_metric):
            log_metric(f"rewards/{self.__name__}/errors", float(len(errors)))
            log_metric(f"rewards/{self.__name__}/nonfinite", float(nonfinite))


def reward_params(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The params a config may set on ``fn``: its keyword-only arguments."""
    return {
        p.name: p for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in _PASSED_BY_TRAINER
    }


def bind_reward_params(fn: Callable[..., Any], name: str, explicit: Mapping[str, Any], config: Any = None) -> dict[str, Any]:
    """Explicit params, then the config field of the same name, then the default; unknown or missing ones fail."""
    accepted = reward_params(fn)
    unknown = sorted(set(explicit) - set(accepted))
    if unknown:
        raise RewardConfigError(
            f"reward {name!r} does not take param(s) {', '.join(unknown)}; it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    params: dict[str, Any] = {}
    for param in accepted.values():
        if param.name in explicit:
            params[param.name] = explicit[param.name]
        elif config is not None and hasattr(config, param.name):
            params[param.name] = getattr(config, param.name)
        elif param.default is inspect.Parameter.empty:
            raise RewardConfigError(f"reward {name!r} needs param {param.name!r}; give it in its `rewards` entry")
    return params


def _parse_entry(entry: Mapping[str, Any]) -> tuple[str, float | None, str | None, dict[str, Any]]:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise RewardConfigError(f"a `rewards` entry needs a `name`: got {dict(entry)!r}")
    nested = entry.get("params") or {}
    if not isinstance(nested, Mapping):
        raise RewardConfigError(f"reward {name!r}: `params` must be a mapping, got {type(nested).__name__}")
    flat = {key: value for key, value in entry.items() if key not in _SPEC_KEYS}
    both = sorted(set(flat) & set(nested))
    if both:
        raise RewardConfigError(f"reward {name!r}: param(s) {', '.join(both)} given both inline and under `params`")
    weight = entry.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise RewardConfigError(f"reward {name!r}: `weight` must be a finite number, got {weight!r}")
        weight = float(weight)
    log_name = entry.get("log_name")
    if log_name is not None and (not isinstance(log_name, str) or not log_name):
        raise RewardConfigError(f"reward {name!r}: `log_name` must be a non-empty string, got {log_name!r}")
    return name, weight, log_name, {**nested, **flat}


def _callable_name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def _bind_one(spec: RewardSpec, config: Any) -> tuple[Any, float | None]:
    import torch

    if isinstance(spec, torch.nn.Module):
        return spec, None  # a reward model object: TRL scores it itself
    if isinstance(spec, GuardedReward):
        return spec, None
    if callable(spec) and not isinstance(spec, (str, Mapping)):
        if inspect.iscoroutinefunction(spec) or inspect.iscoroutinefunction(getattr(spec, "__call__", None)):
            return spec, None  # TRL awaits async rewards; the guard is synchronous
        return GuardedReward(spec, _callable_name(spec)), None
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise RewardConfigError(f"a reward must be a name, a mapping or a callable, got {type(spec).__name__}")
    name, weight, log_name, explicit = _parse_entry(spec)
    fn = get_registry().get("reward_functions", name)
    params = bind_reward_params(fn, name, explicit, config)
    if inspect.iscoroutinefunction(fn):
        bound = functools.partial(fn, **params)
        return bound, weight
    return GuardedReward(fn, log_name or name, params), weight


def build_reward_functions(
    specs: Sequence[RewardSpec] | RewardSpec | None, config: Any = None
) -> tuple[list[Any], list[float] | None]:
    """TRL ``reward_funcs`` and ``reward_weights`` from config entries, names or callables.

    Each spec is a registered name, a mapping ``{name, weight?, log_name?, params?,
    **params}``, a callable (guarded as is), or a ``torch.nn.Module`` (passed to TRL as a
    reward model). ``config`` is the trainer config whose fields fill params of the same
    name. The weights are None when no entry gives one (TRL then weighs all by 1.0);
    otherwise entries without a weight get 1.0. Unknown names raise the registry's
    did-you-mean error.
    """
    if specs is None:
        return [], None
    if isinstance(specs, (str, Mapping)) or callable(specs):
        specs = [specs]
    functions: list[Any] = []
    weights: list[float | None] = []
    for spec in specs:
        function, weight = _bind_one(spec, config)
        functions.append(function)
        weights.append(weight)
    names = [_callable_name(f) for f in functions if not _is_module(f)]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RewardConfigError(
            f"reward name(s) {', '.join(duplicated)} appear more than once, so their metrics would mix; "
            f"give each entry its own `log_name`"
        )
    if all(weight is None for weight in weights):
        return functions, None
    return functions, [1.0 if weight is None else weight for weight in weights]


def _is_module(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


# ---- reward-model training (TRL's RewardTrainer, Bradley-Terry loss) ---------------------


def arithmetic_preference_pairs(problems: Sequence[Mapping[str, str]], seed: int = 0, per_prompt: int = 1) -> list[dict[str, str]]:
    """Pairs for the built-in ``a+b+c=`` task: chosen = the sum, rejected = a different sum in 0..27."""
    rng = random.Random(seed)
    pairs = []
    for problem in problems:
        wrong = [str(n) for n in range(28) if str(n) != problem["answer"]]
        for rejected in rng.sample(wrong, per_prompt):
            pairs.append({"prompt": problem["prompt"], "chosen": problem["answer"], "rejected": rejected})
    return pairs


def build_tiny_reward_model(tokenizer: Any, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, seed: int = 0) -> Any:
    """A tiny LlamaForSequenceClassification (one label) over ``tokenizer``'s vocabulary, in float32."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, num_labels=1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlamaForSequenceClassification(config)


_TINY_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-3, "lr_scheduler_type": "linear", "max_steps": 300, "per_device_train_batch_size": 64,
    "bf16": False, "report_to": "none", "save_strategy": "no", "logging_steps": 50, "disable_tqdm": True,
    "dataloader_num_workers": 0,
}


def train_reward_model(
    output_dir: str | Path,
    *,
    model: Any = None,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    processing_class: Any = None,
    peft_config: Any = None,
    seed: int = 0,
    **config_overrides: Any,
) -> Path:
    """Train a reward model with TRL's RewardTrainer and save it (with its tokenizer) to ``output_dir``.

    ``model``: hub id, local path or model (``num_labels=1``); None builds the tiny
    Llama reward model over rlplug.tiny's character tokenizer. ``train_dataset``: a
    ``datasets.Dataset`` of ``prompt``/``chosen``/``rejected`` (or ``chosen``/``rejected``);
    None uses :func:`arithmetic_preference_pairs` on the built-in task's training prompts.
    ``config_overrides`` are ``trl.RewardConfig`` fields. The loss is Bradley-Terry,
    -log sigmoid(r(chosen) - r(rejected)). The result loads with the ``reward_model``
    reward (``{name: reward_model, model: OUTPUT_DIR}``).
    """
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from rlplug.tasks.arithmetic import split_problems
    from rlplug.tiny import build_char_tokenizer

    fields: dict[str, Any] = {"seed": seed, "output_dir": str(output_dir), "report_to": "none"}
    if model is None:
        processing_class = processing_class or build_char_tokenizer()
        model = build_tiny_reward_model(processing_class, seed=seed)
        fields.update(_TINY_DEFAULTS)
    if train_dataset is None:
        train_dataset = Dataset.from_list(arithmetic_preference_pairs(split_problems(seed)[0], seed=seed, per_prompt=4))
    fields.update(config_overrides)
    trainer = RewardTrainer(
        model=model, args=RewardConfig(**fields), train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=processing_class, peft_config=peft_config,
    )
    trainer.train()
    trainer.save_model(str(output_dir))
    trainer.processing_class.save_pretrained(str(output_dir))
    return Path(output_dir)


def train_rm_main(argv: Sequence[str] | None = None) -> int:
    """``rlplug train-rm``: ``--output_dir DIR [--model ID] [--dataset PATH_OR_ID] [--<RewardConfig field> VALUE ...]``.

    ``--dataset`` is a JSON/JSONL file or a ``datasets`` id with ``chosen``/``rejected``
    (and optionally ``prompt``) columns; without it the built-in arithmetic pairs are used.
    """
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="rlplug train-rm", description=train_rm_main.__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model", default=None, help="hub id or local path; default: the tiny reward model")
    parser.add_argument("--dataset", default=None, help="JSON/JSONL file or datasets id of preference pairs")
    parser.add_argument("--dataset_split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    known, rest = parser.parse_known_args(argv)
    if len(rest) % 2 or any(not key.startswith("--") for key in rest[::2]):
        parser.error(f"extra arguments must be `--field value` pairs of trl.RewardConfig, got {' '.join(rest)}")
    overrides = {key[2:]: yaml.safe_load(value) for key, value in zip(rest[::2], rest[1::2])}
    dataset = None
    if known.dataset is not None:
        from datasets import load_dataset

        if known.dataset.endswith((".json", ".jsonl")):
            dataset = load_dataset("json", data_files=known.dataset, split=known.dataset_split)
        else:
            dataset = load_dataset(known.dataset, split=known.dataset_split)
    path = train_reward_model(known.output_dir, model=known.model, train_dataset=dataset, seed=known.seed, **overrides)
    print(f"reward model saved to {path}; use it with rewards: [{{name: reward_model, model: {path}}}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(train_rm_main())
