"""rlplug-rewards: reward functions selectable by name.

Every function has TRL's reward signature ``fn(prompts, completions, **kwargs) ->
list[float | None]``; its keyword-only parameters are the ones a config may set, and
its docstring names the dataset columns it reads.
"""

from rlplug import hookimpl

from rlplug_rewards.code_exec import code_exec
from rlplug_rewards.format import format_think
from rlplug_rewards.length import length_penalty, overlong_penalty
from rlplug_rewards.math_answer import accuracy_math
from rlplug_rewards.reward_model import reward_model

__all__ = ["accuracy_math", "code_exec", "format_think", "length_penalty", "overlong_penalty", "reward_model"]


@hookimpl
def register_reward_functions(register):
    register("accuracy_math", accuracy_math)
    register("format_think", format_think)
    register("length_penalty", length_penalty)
    register("overlong_penalty", overlong_penalty)
    register("reward_model", reward_model)
    register("code_exec", code_exec)
