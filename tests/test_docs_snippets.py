"""The code in docs/writing-a-plugin.md runs: its files are installed with pip into a fresh
venv, its Python blocks run in order, its JSON output and YAML config are checked against
the installed plugin, and the plugin's own tests pass."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlplug.testing import overlay_venv, pip_install

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "writing-a-plugin.md"
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)
_FILE = re.compile(r"^# file: (\S+)\n")
KNOWN_LANGUAGES = {"python", "toml", "yaml", "json", "bash", "text"}


@dataclass(frozen=True)
class Block:
    language: str
    source: str
    line: int  # 1-based line of the first source line in the markdown
    path: str | None  # set for blocks that start with "# file: PATH"


def parse_blocks(markdown: str) -> list[Block]:
    blocks = []
    for match in _FENCE.finditer(markdown):
        line = markdown.count("\n", 0, match.start(2)) + 1
        source = match.group(2)
        header = _FILE.match(source)
        blocks.append(Block(match.group(1), source, line, header.group(1) if header else None))
    return blocks


def runner_script(blocks: list[Block], label: str) -> str:
    """A script that runs the blocks in one namespace, with tracebacks at the markdown's lines."""
    chunks = [(block.line, block.source) for block in blocks]
    return textwrap.dedent(
        f"""
        chunks = {chunks!r}
        namespace = {{"__name__": "__docs__"}}
        for line, source in chunks:
            exec(compile("\\n" * (line - 1) + source, {label!r}, "exec"), namespace)
        """
    )


def yaml_check(config: str) -> str:
    """Python source that resolves every component name of a config block in the registry."""
    return textwrap.dedent(
        f"""
        import yaml, rlplug
        config = yaml.safe_load({config!r})
        registry = rlplug.get_registry()
        registry.get("algorithms", config["algorithm"])
        if "advantage" in config:
            registry.get("advantage_estimators", config["advantage"])
        for reward in config.get("rewards", []):
            registry.get("reward_functions", reward["name"])
        print("config names resolve")
        """
    )


# ---- the guide ---------------------------------------------------------------------


def test_every_block_is_of_a_kind_this_test_uses():
    blocks = parse_blocks(GUIDE.read_text())
    assert {block.language for block in blocks} <= KNOWN_LANGUAGES
    files = [block.path for block in blocks if block.path]
    assert files == [
        "rlplug-opo/rlplug_opo/advantages.py", "rlplug-opo/rlplug_opo/__init__.py", "rlplug-opo/pyproject.toml",
        "rlplug-opo/tests/test_opo.py",
    ]
    assert len([b for b in blocks if b.language == "python" and not b.path]) == 5
    assert [b.language for b in blocks if b.language in ("json", "yaml")] == ["json", "yaml"]


@pytest.mark.slow
def test_the_guide_runs(tmp_path):
    blocks = parse_blocks(GUIDE.read_text())
    for block in blocks:
        if block.path:
            target = tmp_path / block.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.source)
    python = overlay_venv(tmp_path / "venv")
    installed = pip_install(python, "--no-deps", "--no-build-isolation", "-e", str(tmp_path / "rlplug-opo"))
    assert installed.returncode == 0, installed.stderr

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout)

    # the Python blocks, in order, in one namespace
    code = [b for b in blocks if b.language == "python" and not b.path]
    result = run("-c", runner_script(code, "docs/writing-a-plugin.md"))
    assert result.returncode == 0, result.stderr[-4000:]

    # the JSON block is the plugin's entry in `rlplug plugins --json`
    (documented,) = [json.loads(b.source) for b in blocks if b.language == "json"]
    listing = run("-m", "rlplug.cli", "plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["rlplug-opo"] == documented

    # the YAML config names components that exist
    (config,) = [b.source for b in blocks if b.language == "yaml"]
    resolved = run("-c", yaml_check(config))
    assert resolved.returncode == 0 and resolved.stdout == "config names resolve\n", resolved.stderr[-2000:]

    # the plugin's own tests
    tests = run("-m", "pytest", "rlplug-opo", "-q", "-p", "no:cacheprovider", timeout=400)
    assert tests.returncode == 0, tests.stdout[-4000:]
    assert tests.stdout.splitlines()[-1].startswith("7 passed")


# ---- negative controls: the machinery catches a rotten snippet ------------------------

BROKEN = """\
Some text.

```python
value = 1 + 1
```

More text.

```python
assert value == 3, "the doc says 3"
```
"""


def test_a_failing_snippet_fails_at_its_markdown_line(tmp_path):
    blocks = parse_blocks(BROKEN)
    assert [(b.language, b.line) for b in blocks] == [("python", 4), ("python", 10)]
    result = subprocess.run([sys.executable, "-c", runner_script(blocks, "BROKEN.md")], capture_output=True, text=True)
    assert result.returncode == 1
    assert 'File "BROKEN.md", line 10' in result.stderr and "the doc says 3" in result.stderr


def test_a_config_with_an_unknown_name_fails():
    result = subprocess.run(
        [sys.executable, "-c", yaml_check("algorithm: grpo\nadvantage: opo_basline\n")], capture_output=True, text=True
    )
    assert result.returncode == 1 and "unknown advantage estimator 'opo_basline'" in result.stderr


def test_file_blocks_are_recognised():
    (block,) = parse_blocks("```toml\n# file: a/pyproject.toml\n[project]\n```\n")
    assert block.path == "a/pyproject.toml" and block.source == "# file: a/pyproject.toml\n[project]\n"
