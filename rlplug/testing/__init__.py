"""rlplug.testing: what a plugin author needs to test components.

- toy batches with known values: :func:`toy_rollout`, :func:`degenerate_rollouts`,
  :func:`toy_policy_batch`, :func:`toy_preference_batch`, :func:`toy_unpaired_batch`;
- property checks every component of a kind must pass: :func:`check_advantage_estimator`,
  :func:`check_policy_loss`, :func:`check_preference_loss`;
- temporary registration: :func:`temporary_component`, :func:`temporary_plugin`;
- recorders: :func:`record_hook_calls` (pluggy hook calls), :func:`spy_component`
  (calls of a registered component);
- :func:`write_fake_distribution`: an installed-looking plugin without pip;
  :func:`overlay_venv` and :func:`pip_install`: a real pip install into a throwaway venv.

The pytest fixtures live in :mod:`rlplug.testing.fixtures`, which pytest loads through
the ``pytest11`` entry point whenever rlplug is installed.
"""

from rlplug.testing.batches import (
    PolicyLossBatch,
    degenerate_rollouts,
    make_rollout,
    toy_policy_batch,
    toy_preference_batch,
    toy_rollout,
    toy_unpaired_batch,
)
from rlplug.testing.checks import (
    PropertyCheckFailure,
    check_advantage_estimator,
    check_policy_loss,
    check_preference_loss,
)
from rlplug.testing.distributions import write_fake_distribution
from rlplug.testing.hooks import ComponentSpy, HookCallRecorder, record_hook_calls, spy_component
from rlplug.testing.registration import component_plugin, temporary_component, temporary_plugin
from rlplug.testing.venvs import overlay_venv, pip_install

__all__ = [
    "ComponentSpy",
    "HookCallRecorder",
    "PolicyLossBatch",
    "PropertyCheckFailure",
    "check_advantage_estimator",
    "check_policy_loss",
    "check_preference_loss",
    "component_plugin",
    "degenerate_rollouts",
    "make_rollout",
    "overlay_venv",
    "pip_install",
    "record_hook_calls",
    "spy_component",
    "temporary_component",
    "temporary_plugin",
    "toy_policy_batch",
    "toy_preference_batch",
    "toy_rollout",
    "toy_unpaired_batch",
    "write_fake_distribution",
]
