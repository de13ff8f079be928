import os

import pytest
import torch

os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # tiny_model_dir and the other shared fixtures come from rlplug's pytest plugin
    # (entry point pytest11 in pyproject.toml, module rlplug.testing.fixtures).
    if not config.pluginmanager.has_plugin("rlplug"):
        raise pytest.UsageError(
            "rlplug's pytest plugin (rlplug.testing.fixtures) is not loaded: reinstall rlplug "
            "(make venv, or pip install -e .) and do not pass -p no:rlplug"
        )


@pytest.fixture(autouse=True)
def _fresh_plugins_and_threads():
    """Each test starts with plugins reloaded from the environment and one torch thread."""
    from rlplug.core import plugins

    plugins.reset()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    plugins.reset()


@pytest.fixture(autouse=True)
def _float32_default_dtype():
    """Each test starts with torch's default dtype float32 (models here are float32; a test that
    wants float64 sets it in its own fixture); the previous default is restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def _builtin_task_cache_in_tmp(tmp_path_factory, monkeypatch):
    """The built-in task's warm-up is cached once per test session under pytest's temp dir, not in
    the user's ~/.cache (a test that wants another cache sets RLPLUG_CACHE_DIR itself)."""
    monkeypatch.setenv("RLPLUG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rlplug-cache"))
