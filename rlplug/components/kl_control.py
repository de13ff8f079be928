"""KL coefficient control: fixed, or PPO's adaptive controller."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", §2.2):

    e = clip(KL_observed / KL_target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n / horizon),

    with n the completions seen since the last update. The proportional form of PPO's
    adaptive KL penalty (Schulman et al. 2017; seed 003 §4.3.5 gives the doubling/halving form).
    """

    coef: float
    target: float
    horizon: int

    def update(self, observed_kl: float, num_completions: int) -> float:
        error = min(max(observed_kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * num_completions / self.horizon
        return self.coef

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.coef, self.target, self.horizon = float(state["coef"]), float(state["target"]), int(state["horizon"])
