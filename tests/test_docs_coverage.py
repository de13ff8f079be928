"""The docs cover the code: every hookspec (docs/hooks.md), every component that rlplug or a
bundled plugin registers (docs/components.md), and the testing kit (docs/testing.md).

A failure lists exactly what is missing or stale, so it can be fixed from the message.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest
from _pytest.fixtures import FixtureFunctionDefinition

import rlplug.testing
import rlplug.testing.fixtures
from rlplug.core import hookspecs, plugins
from rlplug.core.registry import COMPONENT_KINDS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CORE_DISTRIBUTION = "rlplug"


# ---- hooks ---------------------------------------------------------------------------


def hookspec_names() -> set[str]:
    return {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "rlplug_spec")}


def documented_hooks(text: str) -> set[str]:
    return set(re.findall(r"^## (\w+)\s*$", text, flags=re.MULTILINE))


def hook_doc_problems(specs: set[str], text: str) -> list[str]:
    documented = documented_hooks(text)
    problems = [f"hook {name} has no '## {name}' section" for name in sorted(specs - documented)]
    problems += [f"section '## {name}' names no hook in rlplug/hookspecs.py" for name in sorted(documented - specs)]
    return problems


# ---- components ----------------------------------------------------------------------

_SECTION = re.compile(r"^## .*\(`(\w+)`\)\s*$", flags=re.MULTILINE)
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$")


def documented_components(text: str) -> dict[tuple[str, str], list[str]]:
    """(kind, name) -> the other cells of its row [plugin, description, paper]."""
    rows: dict[tuple[str, str], list[str]] = {}
    sections = _SECTION.split(text)
    for kind, body in zip(sections[1::2], sections[2::2]):
        for line in body.splitlines():
            match = _ROW.match(line)
            if match:
                rows[(kind, match.group(1))] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def bundled_distributions() -> dict[str, str]:
    """Distribution name -> its directory, for every plugins/*/pyproject.toml."""
    found = {}
    for pyproject in sorted(REPO.glob("plugins/*/pyproject.toml")):
        found[tomllib.loads(pyproject.read_text())["project"]["name"]] = str(pyproject.parent.relative_to(REPO))
    return found


def registered_components(distributions: set[str]) -> dict[tuple[str, str], str]:
    """(kind, name) -> distribution, for the components registered by ``distributions``."""
    registry = plugins.get_registry()
    return {
        (kind, name): component.source.distribution
        for kind in COMPONENT_KINDS
        for name, component in registry.components[kind].items()
        if component.source.distribution in distributions
    }


def component_doc_problems(registered: dict[tuple[str, str], str], text: str) -> list[str]:
    documented = documented_components(text)
    problems = []
    for kind, name in sorted(set(registered) - set(documented)):
        problems.append(f"missing: {kind}: `{name}` | {registered[(kind, name)]}")
    for kind, name in sorted(set(documented) - set(registered)):
        problems.append(f"stale: {kind}: `{name}` is documented but no bundled plugin registers it")
    for key in sorted(set(registered) & set(documented)):
        cells = documented[key]
        if len(cells) != 3:
            problems.append(f"malformed: {key[0]}: `{key[1]}` needs the cells plugin | description | paper")
        elif cells[0] != registered[key]:
            problems.append(f"wrong plugin: {key[0]}: `{key[1]}` is registered by {registered[key]}, not {cells[0]}")
        elif not cells[1] or not cells[2]:
            problems.append(f"empty cell: {key[0]}: `{key[1]}` needs a description and a paper (or —)")
    return problems


def report(path: str, problems: list[str]) -> str:
    return f"{path} is out of date ({len(problems)} problem(s)):\n  " + "\n  ".join(problems)


# ---- the checks on the real docs --------------------------------------------------


def test_every_hookspec_has_a_docstring_and_a_section():
    specs = hookspec_names()
    assert len(specs) == 10
    assert all(getattr(hookspecs, name).__doc__ for name in specs)
    problems = hook_doc_problems(specs, (DOCS / "hooks.md").read_text())
    assert not problems, report("docs/hooks.md", problems)


def test_every_bundled_plugin_is_installed_here():
    """Otherwise its components would be missing from the comparison below."""
    loaded = {source.distribution for source in plugins.plugin_sources().values()}
    bundled = bundled_distributions()
    assert "rlplug-grpo" in bundled
    not_installed = [f"{name} ({path})" for name, path in bundled.items() if name not in loaded]
    assert not not_installed, (
        f"bundled plugins not installed in this environment: {', '.join(not_installed)}; run `make venv` "
        f"(or pip install -e plugins/<dir>); load failures: {plugins.load_failures()}"
    )


def test_every_registered_component_is_documented():
    registered = registered_components({CORE_DISTRIBUTION, *bundled_distributions()})
    assert ("advantage_estimators", "group_norm") in registered and ("kl_estimators", "k3") in registered
    problems = component_doc_problems(registered, (DOCS / "components.md").read_text())
    assert not problems, report("docs/components.md", problems)


def test_the_testing_kit_is_documented():
    text = (DOCS / "testing.md").read_text()
    fixtures = [name for name, obj in vars(rlplug.testing.fixtures).items() if isinstance(obj, FixtureFunctionDefinition)]
    assert {"tiny_model_dir", "toy_rollout", "register_component", "spy_component", "hook_calls"} <= set(fixtures)
    missing = [name for name in [*rlplug.testing.__all__, *fixtures] if f"`{name}" not in text]
    assert not missing, report("docs/testing.md", [f"missing: `{name}`" for name in missing])


# ---- negative controls: the checks catch what they should ----------------------------


def test_a_removed_row_is_reported_exactly():
    text = (DOCS / "components.md").read_text()
    without = "\n".join(line for line in text.splitlines() if not line.startswith("| `group_mean` |"))
    registered = registered_components({CORE_DISTRIBUTION, *bundled_distributions()})
    new_problems = set(component_doc_problems(registered, without)) - set(component_doc_problems(registered, text))
    assert new_problems == {"missing: advantage_estimators: `group_mean` | rlplug-grpo"}


def test_a_new_component_wrong_plugin_and_stale_row_are_reported():
    registered = {("policy_losses", "new_loss"): "rlplug-new", ("kl_estimators", "k1"): "rlplug-other"}
    text = (
        "## Policy losses (`policy_losses`)\n\n| name | plugin | description | paper |\n|---|---|---|---|\n"
        "## KL estimators (`kl_estimators`)\n\n| `k1` | rlplug | log ratio | Schulman 2020 |\n| `k9` | rlplug | x | y |\n"
    )
    assert component_doc_problems(registered, text) == [
        "missing: policy_losses: `new_loss` | rlplug-new",
        "stale: kl_estimators: `k9` is documented but no bundled plugin registers it",
        "wrong plugin: kl_estimators: `k1` is registered by rlplug-other, not rlplug",
    ]


def test_a_row_under_the_wrong_kind_does_not_count():
    text = "## Policy losses (`policy_losses`)\n\n| `group_norm` | rlplug-grpo | x | y |\n"
    problems = component_doc_problems({("advantage_estimators", "group_norm"): "rlplug-grpo"}, text)
    assert problems == [
        "missing: advantage_estimators: `group_norm` | rlplug-grpo",
        "stale: policy_losses: `group_norm` is documented but no bundled plugin registers it",
    ]


def test_a_missing_or_unknown_hook_section_is_reported():
    text = (DOCS / "hooks.md").read_text().replace("## register_kl_estimators\n", "## register_kl_estimator\n")
    assert hook_doc_problems(hookspec_names(), text) == [
        "hook register_kl_estimators has no '## register_kl_estimators' section",
        "section '## register_kl_estimator' names no hook in rlplug/hookspecs.py",
    ]


def test_a_component_of_an_installed_plugin_is_caught(fake_distribution):
    """The coverage follows the registry: a plugin's new component shows up as missing."""
    body = """
        from rlplug import hookimpl

        @hookimpl
        def register_advantage_estimators(register):
            register("undocumented_estimator", lambda rollout: rollout.rewards * 0)
    """
    fake_distribution("rlplug-extra", "docs_extra", "extra", body)
    text = (DOCS / "components.md").read_text()
    before = set(component_doc_problems(registered_components({CORE_DISTRIBUTION, *bundled_distributions()}), text))
    registered = registered_components({CORE_DISTRIBUTION, *bundled_distributions(), "rlplug-extra"})
    assert set(component_doc_problems(registered, text)) - before == {
        "missing: advantage_estimators: `undocumented_estimator` | rlplug-extra"
    }


@pytest.mark.parametrize("page", ["hooks.md", "components.md", "testing.md", "writing-a-plugin.md"])
def test_pages_exist_and_are_linked_from_contributing(page):
    assert (DOCS / page).is_file()
    assert f"docs/{page}" in (REPO / "CONTRIBUTING.md").read_text()
