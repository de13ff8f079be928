"""The ``rlplug train`` configuration: YAML plus ``--field value`` overrides, TRL style.

A config is one flat mapping (as in TRL's own ``trl grpo --config``) whose keys fall in
four parts:

- the rlplug part (:class:`RLPlugArguments`): ``algorithm``, component overrides, ``kl``,
  ``rewards``;
- the model part (:class:`ModelArguments`): name or path, LoRA, quantization, dtype;
- the dataset part (:class:`DatasetArguments`);
- every field of the TRL config of the algorithm's trainer (for online algorithms
  ``trl.GRPOConfig``), passed through to :func:`rlplug.build_trainer`. Gradient
  checkpointing is TRL's ``gradient_checkpointing`` / ``activation_checkpointing``.

Command-line options override the YAML file, which overrides the defaults. Parsing is
TRL's :class:`trl.TrlParser` (transformers' ``HfArgumentParser``) over these dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rlplug.core.algorithm import KL_PLACEMENTS, Algorithm, KLSpec

QUANTIZATIONS = ("none", "4bit", "8bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")
KL_KEYS = tuple(f.name for f in dataclasses.fields(KLSpec))
REWARD_KEYS = ("name", "weight", "params")


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the field."""


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def parse_structured(name: str, value: Any) -> Any:
    """A value given on the command line as YAML/JSON text (``--kl '{coef: 0.04}'``), parsed."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"{name}: cannot read {value!r} as YAML or JSON") from None


@dataclass(frozen=True)
class RewardSpec:
    """One reward function by registry name, its weight, and keyword parameters bound to it."""

    name: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


def parse_rewards(value: Any) -> list[RewardSpec] | None:
    """``rewards``: a list of ``{name, weight, params}`` (or of names), or ``"a,b"`` from the command line."""
    value = parse_structured("rewards", value)
    if value is None:
        return None
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError("rewards must be a non-empty list of {name, weight} entries, e.g. [{name: arithmetic_exact_match, weight: 1.0}]")
    specs = []
    for i, entry in enumerate(value):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"rewards[{i}] must be a mapping with a `name` (and optional weight, params); got {entry!r}")
        unknown = sorted(set(entry) - set(REWARD_KEYS))
        if unknown:
            raise ConfigError(f"rewards[{i}] has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(REWARD_KEYS)}")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"rewards[{i}].weight must be a number; got {weight!r}")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"rewards[{i}].params must be a mapping of keyword arguments; got {params!r}")
        specs.append(RewardSpec(name=str(entry["name"]), weight=float(weight), params=params))
    return specs


def parse_kl(value: Any) -> dict[str, Any] | None:
    """``kl``: a mapping with some of ``estimator``, ``placement``, ``coef``, ``importance_ratio``."""
    value = parse_structured("kl", value)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"kl must be a mapping with keys among {', '.join(KL_KEYS)}; got {value!r}")
    unknown = sorted(set(value) - set(KL_KEYS))
    if unknown:
        raise ConfigError(f"kl has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KL_KEYS)}")
    if "placement" in value:
        _check_choice("kl.placement", value["placement"], KL_PLACEMENTS)
    coef = value.get("coef", 0.0)
    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or coef < 0:
        raise ConfigError(f"kl.coef must be a number >= 0; got {coef!r}")
    return dict(value)


def parse_chunk_size(value: Any) -> int | str:
    """``logprob_chunk_size``: "auto", or a number of tokens (0: off)."""
    text = str(value).strip()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise ConfigError(f"logprob_chunk_size must be auto, 0 (off) or a positive number of tokens; got {value!r}")


@dataclass
class RLPlugArguments:
    """The rlplug part: which algorithm, which components, which rewards."""

    algorithm: str = field(default="grpo", metadata={"help": "algorithm recipe by name (`rlplug plugins` lists them)"})
    advantage: str | None = field(default=None, metadata={"help": "advantage estimator by name (overrides the recipe)"})
    policy_loss: str | None = field(default=None, metadata={"help": "policy loss by name (overrides the recipe)"})
    aggregation: str | None = field(default=None, metadata={"help": "loss aggregation by name (overrides the recipe)"})
    kl: dict | str | None = field(
        default=None, metadata={"help": "KL spec, e.g. '{estimator: k3, placement: loss, coef: 0.04}'"}
    )
    rewards: list | str | None = field(
        default=None,
        metadata={"help": "reward functions by name with weights, e.g. '[{name: arithmetic_exact_match, weight: 1}]'"},
    )
    component_params: dict | str | None = field(
        default=None, metadata={"help": "keyword params per component slot, e.g. '{advantage: {std_epsilon: 1e-6}}'"}
    )
    sampling_corrections: list | str | None = field(
        default=None, metadata={"help": "sampling corrections by name, added to the recipe's, e.g. off_policy_sequence_mask"}
    )
    dynamic_sampling: dict | str | None = field(
        default=None,
        metadata={"help": "DAPO dynamic sampling: true, or '{max_generation_rounds: 4}' (drop equal-reward groups, refill)"},
    )
    torch_threads: int | None = field(
        default=None, metadata={"help": "torch.set_num_threads; fix it (with the seed) for reproducible CPU runs"}
    )
    on_nonfinite: Literal["error", "skip"] = field(
        default="error",
        metadata={"help": "a NaN/inf loss or gradient: stop before the optimizer step (error) or drop the step (skip)"},
    )
    logprob_chunk_size: str = field(
        default="auto",
        metadata={"help": "tokens per LM-head chunk for log-probs off Triton devices: auto (128 when the vocabulary "
                          "has >= 32768 entries), 0 (off: TRL's fused head) or a number"},
    )

    def __post_init__(self) -> None:
        self.kl = parse_kl(self.kl)
        self.rewards = parse_rewards(self.rewards)
        params = parse_structured("component_params", self.component_params)
        if params is not None and not (isinstance(params, dict) and all(isinstance(v, dict) for v in params.values())):
            raise ConfigError(f"component_params must map a slot name to a mapping of params; got {params!r}")
        self.component_params = params
        corrections = parse_structured("sampling_corrections", self.sampling_corrections)
        self.sampling_corrections = [corrections] if isinstance(corrections, str) else corrections
        self.dynamic_sampling = parse_structured("dynamic_sampling", self.dynamic_sampling)
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"torch_threads must be >= 1; got {self.torch_threads}")
        self.logprob_chunk_size = parse_chunk_size(self.logprob_chunk_size)


@dataclass
class ModelArguments:
    """The model part. No ``model_name_or_path`` means the built-in tiny model, warmed up on first use."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "hub id or local directory; unset: the built-in tiny model"}
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "weights dtype (and the 4-bit compute dtype; bfloat16 when auto)"}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, flash_attention_2"})
    quantization: Literal["none", "4bit", "8bit"] = field(
        default="none", metadata={"help": "bitsandbytes quantization of the frozen base: 4bit is QLoRA (nf4)"}
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = field(default="nf4", metadata={"help": "4-bit data type"})
    bnb_4bit_use_double_quant: bool = field(default=True, metadata={"help": "quantize the quantization constants"})
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter (--no_lora: full fine-tuning)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale alpha/r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "module names, or all-linear (every linear but the output)"}
    )

    def __post_init__(self) -> None:
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("quantization", self.quantization, QUANTIZATIONS)
        _check_choice("bnb_4bit_quant_type", self.bnb_4bit_quant_type, ("nf4", "fp4"))
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        if self.quantization != "none" and not self.lora:
            raise ConfigError(f"quantization={self.quantization} needs lora: a quantized base cannot be trained directly (QLoRA)")
        if self.lora and self.lora_r < 1:
            raise ConfigError(f"lora_r must be >= 1; got {self.lora_r}")

    @property
    def is_builtin(self) -> bool:
        return self.model_name_or_path is None


@dataclass
class DatasetArguments:
    """The dataset part. No ``dataset_name`` means the built-in arithmetic task."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "hub id, local directory or data file; unset: the built-in arithmetic task"}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "dataset configuration name"})
    dataset_train_split: str = field(default="train", metadata={"help": "split to train on"})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "held-out split (or data file) for eval_before / eval_after"}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "column holding the prompt"})
    answer_column: str | None = field(
        default=None, metadata={"help": "column copied to `answer`, the column answer-checking rewards read"}
    )
    answer_pattern: str | None = field(
        default=None, metadata={"help": "regex; its first group in answer_column becomes the answer (GSM8K: '####\\s*(.+)')"}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "system message; makes prompts conversational"})
    conversational: bool = field(default=False, metadata={"help": "wrap text prompts as a user message"})
    eval_prompts: int | None = field(
        default=None, metadata={"help": "held-out prompts scored before and after training (unset: all; 0: skip)"}
    )
    pretraining_dataset_name: str | None = field(
        default=None,
        metadata={"help": "text dataset (a `text` column) for PPO-ptx's pretraining term (ptx_coef > 0); "
                          "unset: the built-in task's labelled examples"},
    )
    pretraining_dataset_split: str = field(default="train", metadata={"help": "split of pretraining_dataset_name"})

    def __post_init__(self) -> None:
        if self.eval_prompts is not None and self.eval_prompts < 0:
            raise ConfigError(f"eval_prompts must be >= 0; got {self.eval_prompts}")
        if self.answer_pattern is not None and self.answer_column is None:
            raise ConfigError("answer_pattern needs answer_column (the column it is applied to)")

    @property
    def is_builtin(self) -> bool:
        return self.dataset_name is None


@dataclass
class TrainSettings:
    """A parsed ``rlplug train`` command."""

    rlplug: RLPlugArguments
    model: ModelArguments
    data: DatasetArguments
    recipe: Algorithm
    trainer_config_class: type
    trainer_fields: dict[str, Any]
    """Fields of the TRL config that the user set (file or command line), parsed to their types."""
    config_path: str | None = None


def trainer_config_class(recipe: Algorithm) -> type:
    """The TRL config class whose fields a recipe's trainer takes."""
    from rlplug.core.registry import UnknownComponentError
    from rlplug.trl.build import trainer_kind_of

    try:
        return trainer_kind_of(recipe).config_class()
    except UnknownComponentError as error:
        raise ConfigError(f"algorithm {recipe.name!r}: {error}") from None


def load_config_file(path: str) -> dict[str, Any]:
    """A YAML config file as a mapping; malformed YAML is a one-line ConfigError."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"config {path}: cannot read it ({error.strerror or error})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"config {path}: malformed YAML{where}: {problem}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"config {path}: must be a YAML mapping of field: value; got a {type(config).__name__}")
    return config


def _option_value(argv: list[str], name: str) -> str | None:
    """The value of ``--name`` (``--name v`` or ``--name=v``), last one winning."""
    value = None
    for i, token in enumerate(argv):
        if token == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(f"--{name}="):
            value = token.split("=", 1)[1]
    return value


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _make_parser(config_class: type) -> Any:
    from trl import TrlParser

    class _Parser(TrlParser):
        def error(self, message: str) -> None:  # argparse would print usage and exit; one line instead
            raise ConfigError(message)

    return _Parser(
        [RLPlugArguments, ModelArguments, DatasetArguments, config_class],
        prog="rlplug train",
        allow_abbrev=False,
        description=(
            "Train with an rlplug algorithm on TRL. With no arguments: GRPO + LoRA on the built-in task. "
            "--config FILE.yaml reads fields from a YAML mapping; --field value overrides it. "
            "--debug shows the traceback of an error."
        ),
    )


def _explicit_destinations(parser: Any, argv: list[str]) -> set[str]:
    names = set()
    for token in argv:
        if token.startswith("--"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            if action is not None:
                names.add(action.dest)
    return names


def _split_config_option(argv: list[str]) -> tuple[str | None, list[str]]:
    rest, path, i = [], None, 0
    while i < len(argv):
        token = argv[i]
        if token == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a file path")
            path, i = argv[i + 1], i + 2
            continue
        if token.startswith("--config="):
            path = token.split("=", 1)[1]
        else:
            rest.append(token)
        i += 1
    return path, rest


def _chosen_algorithm(argv: list[str], file_values: dict[str, Any]) -> Algorithm:
    """``algorithm`` if set, else the recipe of TRL's ``loss_type`` if set, else the default (rlplug.trl.loss_types)."""
    from rlplug.core.plugins import get_registry
    from rlplug.trl.build import resolve_algorithm, trainer_kind_of
    from rlplug.trl.loss_types import as_trl_loss_type, check_loss_type_matches, select_algorithm

    algorithm = _option_value(argv, "algorithm") or file_values.get("algorithm")
    loss_type = _option_value(argv, "loss_type") or file_values.get("loss_type")
    named = resolve_algorithm(str(algorithm or RLPlugArguments.algorithm))
    if loss_type is None or not trainer_kind_of(named).takes_reward_funcs:
        return named
    try:
        if algorithm is not None:
            check_loss_type_matches(named, str(loss_type))
            return named
        return as_trl_loss_type(get_registry().get("algorithms", select_algorithm(None, str(loss_type))))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def parse_train_args(argv: list[str]) -> TrainSettings:
    """Parse ``rlplug train`` arguments: ``--config FILE.yaml`` and ``--field value`` overrides."""
    from rlplug.trl.build import resolve_algorithm

    config_path, argv = _split_config_option(list(argv))
    file_values = load_config_file(config_path) if config_path else {}
    env = file_values.pop("env", None)
    if env is not None:
        if not isinstance(env, dict):
            raise ConfigError(f"config {config_path}: `env` must be a mapping of variable: value")
        os.environ.update({str(k): str(v) for k, v in env.items()})

    recipe = _chosen_algorithm(argv, file_values)
    config_class = trainer_config_class(recipe)
    parser = _make_parser(config_class)

    known = sorted({action.dest for action in parser._actions if action.dest != "help"})
    unknown = [key for key in file_values if key not in known]
    if unknown:
        raise ConfigError(
            f"config {config_path}: unknown field {unknown[0]!r}.{_did_you_mean(unknown[0], known)} "
            f"Fields are rlplug's (rlplug train --help) and {config_class.__name__}'s."
        )
    parser.set_defaults_with_config(**file_values)
    namespace, remaining = parser.parse_known_args(argv)
    if remaining:
        option = remaining[0]
        hint = _did_you_mean(option.lstrip("-").split("=")[0].replace("-", "_"), known) if option.startswith("-") else ""
        raise ConfigError(f"unknown option {option!r}.{hint} See rlplug train --help.")
    values = vars(namespace)

    def build(cls: type) -> Any:
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.init})

    rlplug_args, model_args, data_args = build(RLPlugArguments), build(ModelArguments), build(DatasetArguments)
    explicit = set(file_values) | _explicit_destinations(parser, argv)
    trainer_names = {f.name for f in dataclasses.fields(config_class) if f.init}
    trainer_fields = {name: values[name] for name in sorted(explicit & trainer_names)}

    recipe = resolve_algorithm(
        recipe, advantage=rlplug_args.advantage, policy_loss=rlplug_args.policy_loss,
        aggregation=rlplug_args.aggregation, kl=rlplug_args.kl, component_params=rlplug_args.component_params,
        sampling_corrections=rlplug_args.sampling_corrections, dynamic_sampling=rlplug_args.dynamic_sampling,
    )
    return TrainSettings(
        rlplug=rlplug_args, model=model_args, data=data_args, recipe=recipe,
        trainer_config_class=config_class, trainer_fields=trainer_fields, config_path=config_path,
    )
