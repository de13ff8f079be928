"""Algorithm recipes and the KL spec: an algorithm is data, never a branch in code."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

KLPlacementName = Literal["reward", "loss", "none"]
KL_PLACEMENTS: tuple[str, ...] = ("reward", "loss", "none")


@dataclass(frozen=True)
class KLSpec:
    """Which KL estimator, where it enters the objective, and with what coefficient.

    - ``placement="reward"``: the estimator is computed detached per token and subtracted
      from the rewards before advantage estimation (k1 there is unbiased).
    - ``placement="loss"``: ``coef * estimator`` is added to the per-token loss and
      differentiated, times the importance ratio pi/pi_old when ``importance_ratio``.
    - ``placement="none"`` or ``coef == 0``: no KL, and no reference forward pass.
    - ``future_kl_correction`` (loss placement, on by default): adds sg(sum_{u>t} P_u k1_u) * log pi_t
      and prefix importance weights P_t, which make per-token loss forms exact for whole
      sequences, on- and off-policy. A plain TRL config (``beta`` > 0) turns it off, for parity
      with TRL's per-token k3 term; the guard then warns once.
    - ``target``: a target KL per sequence turns on PPO's adaptive coefficient (Ziegler et al.
      2019), adapted over ``horizon`` completions; ``coef`` is then its starting value.
    """

    estimator: str = "k1"
    placement: KLPlacementName = "reward"
    coef: float = 0.0
    importance_ratio: bool = True
    future_kl_correction: bool = True
    target: float | None = None
    horizon: int = 10000

    def __post_init__(self) -> None:
        if self.placement not in KL_PLACEMENTS:
            raise ValueError(f"kl.placement must be one of {', '.join(KL_PLACEMENTS)}; got {self.placement!r}")
        if not isinstance(self.coef, (int, float)) or self.coef < 0:
            raise ValueError(f"kl.coef must be a number >= 0; got {self.coef!r}")
        if self.target is not None and (self.target <= 0 or self.coef <= 0):
            raise ValueError("kl.target (adaptive KL) needs a target > 0 and a starting kl.coef > 0")
        if self.horizon <= 0:
            raise ValueError(f"kl.horizon must be > 0; got {self.horizon!r}")

    @property
    def active(self) -> bool:
        return self.placement != "none" and self.coef != 0.0


@dataclass(frozen=True)
class DynamicSamplingSpec:
    """DAPO's dynamic sampling (Yu et al. 2025, arXiv:2503.14476, §3.2).

    Groups whose outcome rewards are all equal carry no group-relative signal; they are
    dropped and the batch is refilled by generating for more prompts, at most
    ``max_generation_rounds`` generation rounds per batch (the first included). When the
    cap is hit, the batch is completed with dropped groups (zero advantage under a group
    baseline) and the shortfall is logged, so the batch size never changes.
    """

    max_generation_rounds: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.max_generation_rounds, int) or self.max_generation_rounds < 1:
            raise ValueError(
                f"dynamic_sampling.max_generation_rounds must be an integer >= 1; got {self.max_generation_rounds!r}"
            )


def dynamic_sampling_spec(value: "bool | dict[str, Any] | DynamicSamplingSpec | None") -> DynamicSamplingSpec | None:
    """``dynamic_sampling`` as given in a config: true/false, a mapping of its fields, or a spec."""
    if value is None or value is False or isinstance(value, DynamicSamplingSpec):
        return value or None
    if value is True:
        return DynamicSamplingSpec()
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"max_generation_rounds"})
        if unknown:
            raise ValueError(f"dynamic_sampling has unknown key(s) {', '.join(unknown)}; allowed: max_generation_rounds")
        return DynamicSamplingSpec(**value)
    raise ValueError(f"dynamic_sampling must be true, false or {{max_generation_rounds: N}}; got {value!r}")


@dataclass(frozen=True)
class Algorithm:
    """A named recipe: trainer kind, component names and default parameters.

    - ``trainer``: the name of a registered trainer kind (``online``, ``paired_preference``,
      ``unpaired_preference``, or one a plugin registers).

    - ``config_defaults``: trainer-config fields (TRL's names) the recipe sets unless the
      user sets them, e.g. ``{"epsilon_high": 0.28}``.
    - ``embedded_defaults``: trainer-config fields for the built-in tiny model and task
      (``rlplug train`` with no model), above ``config_defaults``, e.g. DPO's larger beta there.
    - ``value_loss``: the critic's loss (trainer kinds with a critic, e.g. ``ppo``).
    - ``component_params``: per component slot (``"advantage"``, ``"policy_loss"``, ...),
      keyword arguments for that component; a sampling correction's params go under its name.
    - ``sampling_corrections``: names of sampling corrections whose weights multiply the
      per-token policy loss (TRL's ``off_policy_mask_threshold`` and vLLM correction add theirs).
    - ``dynamic_sampling``: DAPO's dynamic sampling (drop groups whose rewards are all equal,
      refill by generating more), or ``None``.
    """

    name: str
    trainer: str = "online"
    advantage: str | None = None
    policy_loss: str | None = None
    aggregation: str | None = None
    preference_loss: str | None = None
    value_loss: str | None = None
    kl: KLSpec = field(default_factory=KLSpec)
    config_defaults: dict[str, Any] = field(default_factory=dict)
    component_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    embedded_defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    sampling_corrections: tuple[str, ...] = ()
    dynamic_sampling: DynamicSamplingSpec | None = None

    def with_overrides(self, **overrides: Any) -> "Algorithm":
        """A copy with some component names, the KL spec or params replaced (None keeps)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
