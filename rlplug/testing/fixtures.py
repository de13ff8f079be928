"""rlplug's pytest plugin (entry point ``pytest11: rlplug``): fixtures for plugin tests.

Installed with rlplug, so any test suite in the environment can use these fixtures
without a conftest. Disable with ``pytest -p no:rlplug``. None is autouse.
"""

from __future__ import annotations

import sys
from pathlib import Path
from contextlib import ExitStack
from typing import Any, Callable, Iterator

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny character-level Llama and its tokenizer saved to a local directory (rlplug.demo.tiny)."""
    from rlplug.demo.tiny import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """The character-level tokenizer of rlplug.demo.tiny (digits, + - * = ( ) and space)."""
    from rlplug.demo.tiny import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture
def tiny_model(tiny_tokenizer: Any) -> Any:
    """A fresh tiny Llama over ``tiny_tokenizer`` (float32, seed 0); each test gets its own."""
    from rlplug.demo.tiny import build_tiny_llama

    return build_tiny_llama(tiny_tokenizer)


@pytest.fixture
def toy_rollout() -> Any:
    """rlplug.testing.toy_rollout(): two groups of four, rewards [1, 0, 0, 1 | 3, 1, 2, 2]."""
    from rlplug.testing.batches import toy_rollout as make

    return make()


@pytest.fixture
def degenerate_rollouts() -> dict[str, Any]:
    """rlplug.testing.degenerate_rollouts(): size-1 groups, equal rewards, NaN groups, ..."""
    from rlplug.testing.batches import degenerate_rollouts as make

    return make()


@pytest.fixture
def toy_policy_batch() -> Any:
    """rlplug.testing.toy_policy_batch(): on-policy inputs of a policy loss, advantages [1, -1, 0.5, 0]."""
    from rlplug.testing.batches import toy_policy_batch as make

    return make()


@pytest.fixture
def toy_preference_batch() -> Any:
    """rlplug.testing.toy_preference_batch(): three pairs with margins [2, -1, 0]."""
    from rlplug.testing.batches import toy_preference_batch as make

    return make()


@pytest.fixture
def toy_unpaired_batch() -> Any:
    """rlplug.testing.toy_unpaired_batch(): four labelled rows with log-ratios [1, -1, 0, 1]."""
    from rlplug.testing.batches import toy_unpaired_batch as make

    return make()


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    """Forget loaded plugins before and after the test, so each test loads them anew."""
    from rlplug.core import plugins

    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def register_component() -> Iterator[Callable[..., Any]]:
    """``register_component(kind, name, obj)``: registered for this test, removed at teardown."""
    from rlplug.testing.registration import temporary_component

    with ExitStack() as stack:
        yield lambda kind, name, obj: stack.enter_context(temporary_component(kind, name, obj))


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., Any]]:
    """``register_plugin(plugin, name)``: a module or object with hookimpls, for this test only."""
    from rlplug.testing.registration import temporary_plugin

    with ExitStack() as stack:
        yield lambda plugin, name: stack.enter_context(temporary_plugin(plugin, name))


@pytest.fixture
def hook_calls() -> Iterator[Any]:
    """A HookCallRecorder of every pluggy hook call during the test."""
    from rlplug.testing.hooks import record_hook_calls

    with record_hook_calls() as recorder:
        yield recorder


@pytest.fixture
def spy_component() -> Iterator[Callable[[str, str], Any]]:
    """``spy_component(kind, name)`` returns a ComponentSpy recording each call until teardown."""
    from rlplug.testing.hooks import spy_component as spy

    with ExitStack() as stack:
        yield lambda kind, name: stack.enter_context(spy(kind, name))


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``fake_distribution(dist_name, module_name, entry_point, body, version="1.0", requires=())``.

    Writes an installed-looking plugin distribution into a directory on ``sys.path`` (see
    rlplug.testing.write_fake_distribution); its modules are forgotten at teardown.
    """
    from rlplug.testing.distributions import write_fake_distribution

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def make(dist_name: str, module_name: str, entry_point: str, body: str, version: str = "1.0", requires=()):
        modules.append(module_name)
        return write_fake_distribution(site, dist_name, module_name, entry_point, body, version, requires)

    yield make
    for name in modules:
        sys.modules.pop(name, None)
