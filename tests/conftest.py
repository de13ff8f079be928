import os

import pytest
import torch

os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny character-level Llama and its tokenizer saved to a local directory."""
    from rlplug.tiny import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(autouse=True)
def _fresh_plugins_and_threads():
    """Each test starts with plugins reloaded from the environment and one torch thread."""
    from rlplug import plugins

    plugins.reset()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    plugins.reset()
