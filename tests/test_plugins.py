"""Plugin loading: broken plugins, duplicates, unknown names, environment controls."""

import json
import sys
import textwrap
import warnings

import pytest

from rlplug.core import plugins
from rlplug.cli import main as cli_main
from rlplug.core.registry import DuplicateComponentError, UnknownComponentError


def make_distribution(root, dist_name, module_name, entry_point, body, version="1.0"):
    """Write an installed-looking distribution (module + dist-info with an entry point) under root."""
    (root / f"{module_name}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[rlplug]\n{entry_point} = {module_name}\n")


GOOD = """
    from rlplug import hookimpl

    @hookimpl
    def register_advantage_estimators(register):
        register("good_estimator", lambda rollout: rollout.rewards)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("fakeplug_")]:
        del sys.modules[name]


def test_import_loads_nothing_and_loading_is_idempotent(site):
    make_distribution(site, "rlplug-good", "fakeplug_good", "good", GOOD)
    assert plugins._state.pm is None
    first = plugins.get_plugin_manager()
    assert plugins.get_plugin_manager() is first
    assert plugins.get_registry().get("advantage_estimators", "good_estimator") is not None


def test_broken_plugin_is_named_and_others_still_load(site):
    make_distribution(site, "rlplug-good", "fakeplug_good", "good", GOOD)
    make_distribution(site, "rlplug-broken", "fakeplug_broken", "broken", "raise ImportError('no such thing')", "2.3")
    with pytest.warns(plugins.PluginLoadWarning, match=r"'broken' from rlplug-broken 2\.3 .*no such thing"):
        registry = plugins.get_registry()
    assert "good_estimator" in registry.names("advantage_estimators")
    assert "grpo" in registry.names("algorithms")
    assert "broken" in plugins.load_failures()


def test_strict_mode_turns_a_broken_plugin_into_an_error(site, monkeypatch):
    make_distribution(site, "rlplug-broken", "fakeplug_broken", "broken", "raise ImportError('nope')")
    monkeypatch.setenv("RLPLUG_STRICT_PLUGINS", "1")
    with pytest.raises(plugins.PluginLoadError, match="rlplug-broken"):
        plugins.get_plugin_manager()


def test_misspelled_hook_name_fails_at_load(site):
    body = """
        from rlplug import hookimpl

        @hookimpl
        def register_advantage_estimater(register):
            register("x", lambda r: r.rewards)
    """
    make_distribution(site, "rlplug-typo", "fakeplug_typo", "typo", body)
    with pytest.warns(plugins.PluginLoadWarning, match="register_advantage_estimater"):
        plugins.get_plugin_manager()
    assert not plugins.get_plugin_manager().has_plugin("typo")


def test_duplicate_name_names_both_distributions(site):
    make_distribution(site, "rlplug-good", "fakeplug_good", "good", GOOD)
    make_distribution(site, "rlplug-copycat", "fakeplug_copycat", "copycat", GOOD, "0.5")
    with pytest.raises(DuplicateComponentError) as error:
        plugins.get_registry()
    assert "rlplug-good 1.0" in str(error.value) and "rlplug-copycat 0.5" in str(error.value)
    assert "'good_estimator'" in str(error.value)


def test_duplicate_of_a_builtin_is_an_error_too(site):
    body = """
        from rlplug import hookimpl

        @hookimpl
        def register_kl_estimators(register):
            register("k3", lambda a, b: a - b)
    """
    make_distribution(site, "rlplug-shadow", "fakeplug_shadow", "shadow", body)
    with pytest.raises(DuplicateComponentError, match=r"'k3'.*rlplug .*rlplug-shadow"):
        plugins.get_registry()


def test_unknown_name_suggests_close_matches():
    registry = plugins.get_registry()
    with pytest.raises(UnknownComponentError) as error:
        registry.get("algorithms", "dr-grpo")
    message = str(error.value)
    assert "Did you mean: dr_grpo" in message and "pip install rlplug-dr-grpo" in message
    with pytest.raises(UnknownComponentError, match="Did you mean: group_norm"):
        registry.get("advantage_estimators", "group_nrom")


def test_unknown_name_with_nothing_close_lists_what_exists():
    with pytest.raises(UnknownComponentError) as error:
        plugins.get_registry().get("kl_estimators", "zzz")
    assert "Did you mean" not in str(error.value) and "Available: k1, k1_straight_through, k2, k3" in str(error.value)


def test_disable_and_load_controls(site, monkeypatch):
    make_distribution(site, "rlplug-good", "fakeplug_good", "good", GOOD)
    monkeypatch.setenv("RLPLUG_DISABLE_PLUGINS", "good")
    assert "good_estimator" not in plugins.get_registry().names("advantage_estimators")
    assert "grpo" in plugins.get_registry().names("algorithms")

    plugins.reset()
    monkeypatch.delenv("RLPLUG_DISABLE_PLUGINS")
    monkeypatch.setenv("RLPLUG_LOAD_PLUGINS", "")
    registry = plugins.get_registry()
    assert registry.names("algorithms") == [] and "k3" in registry.names("kl_estimators")

    plugins.reset()
    monkeypatch.setenv("RLPLUG_LOAD_PLUGINS", "good")
    registry = plugins.get_registry()
    assert "good_estimator" in registry.names("advantage_estimators") and registry.names("algorithms") == []


def test_plugins_json_lists_distributions_with_components(capsys):
    assert cli_main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    grpo = next(row for row in rows if row["name"] == "rlplug-grpo")
    assert grpo["entry_point"] == "grpo" and grpo["version"]
    assert grpo["components"]["algorithms"] == sorted(["grpo", "dr_grpo", "dapo", "bnpo", "gspo", "cispo", "sapo", "luspo", "vespo", "gmpo"])
    assert all(row["name"] != "rlplug" for row in rows)

    assert cli_main(["plugins", "--json", "--all"]) == 0
    rows = json.loads(capsys.readouterr().out)
    core = next(row for row in rows if row["name"] == "rlplug")
    assert {"k1", "k2", "k3"} <= set(core["components"]["kl_estimators"])


def test_hookimpl_may_take_a_subset_and_components_are_attributed(site):
    make_distribution(site, "rlplug-good", "fakeplug_good", "good", GOOD)
    source = plugins.get_registry().source("advantage_estimators", "good_estimator")
    assert (source.distribution, source.version, source.plugin_name) == ("rlplug-good", "1.0", "good")
