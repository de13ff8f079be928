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
class Algorithm:
    """A named recipe: trainer kind, component names and default parameters.

    - ``trainer``: the name of a registered trainer kind (``online``, ``paired_preference``,
      ``unpaired_preference``, or one a plugin registers).

    - ``config_defaults``: trainer-config fields (TRL's names) the recipe sets unless the
      user sets them, e.g. ``{"epsilon_high": 0.28}``.
    - ``embedded_defaults``: trainer-config fields for the built-in tiny model and task
      (``rlplug train`` with no model), above ``config_defaults``, e.g. DPO's larger beta there.
    - ``component_params``: per component slot (``"advantage"``, ``"policy_loss"``, ...),
      keyword arguments for that component.
    """

    name: str
    trainer: str = "online"
    advantage: str | None = None
    policy_loss: str | None = None
    aggregation: str | None = None
    preference_loss: str | None = None
    kl: KLSpec = field(default_factory=KLSpec)
    config_defaults: dict[str, Any] = field(default_factory=dict)
    component_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    embedded_defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def with_overrides(self, **overrides: Any) -> "Algorithm":
        """A copy with some component names, the KL spec or params replaced (None keeps)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
