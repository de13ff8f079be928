"""A plugin made for another rlplug major version is refused, naming both versions."""

from types import SimpleNamespace

import pytest

import rlplug.core.version
from rlplug.core import plugins
from rlplug.app.new_plugin import rlplug_requirement

BODY = """
    from rlplug import hookimpl

    @hookimpl
    def register_advantage_estimators(register):
        register("{name}", lambda rollout: rollout.rewards * 0)
"""


def test_plugin_for_the_next_major_is_refused_with_both_versions(fake_distribution):
    fake_distribution("rlplug-future", "guard_future", "future", BODY.format(name="future_estimator"),
                      version="2.0", requires=["rlplug>=2,<3", "torch>=2.4"])
    with pytest.warns(plugins.PluginLoadWarning) as caught:
        registry = plugins.get_registry()
    (message,) = [str(w.message) for w in caught]
    assert message == (
        "rlplug plugin 'future' from rlplug-future 2.0 failed to load and was skipped: IncompatiblePluginError: "
        f"rlplug-future 2.0 requires rlplug<3,>=2 but rlplug {rlplug.core.version.__version__} is installed; install a release "
        f"of rlplug-future made for rlplug {rlplug.core.version.__version__}, or an rlplug that satisfies <3,>=2"
    )
    assert "future_estimator" not in registry.names("advantage_estimators")
    assert "grpo" in registry.names("algorithms")  # the others still load
    assert "future" in plugins.load_failures()


def test_refused_before_its_module_is_imported(fake_distribution):
    fake_distribution("rlplug-old", "guard_old", "old", "raise RuntimeError('imported anyway')",
                      version="0.0.1", requires=["rlplug<0.1"])
    with pytest.warns(plugins.PluginLoadWarning, match=r"requires rlplug<0\.1 but rlplug 0\.1\.0 is installed"):
        plugins.get_plugin_manager()


def test_strict_mode_makes_the_refusal_an_error(fake_distribution, monkeypatch):
    fake_distribution("rlplug-future", "guard_future", "future", BODY.format(name="x"), requires=["rlplug>=2,<3"])
    monkeypatch.setenv("RLPLUG_STRICT_PLUGINS", "1")
    with pytest.raises(plugins.PluginLoadError, match="rlplug-future 1.0 requires rlplug<3,>=2"):
        plugins.get_plugin_manager()


def test_compatible_or_unpinned_plugins_load(fake_distribution, recwarn):
    """Negative control for the guard: what fits, or says nothing about rlplug, is not refused."""
    fake_distribution("rlplug-fits", "guard_fits", "fits", BODY.format(name="fits_estimator"),
                      requires=[rlplug_requirement(rlplug.core.version.__version__)])
    fake_distribution("rlplug-unpinned", "guard_unpinned", "unpinned", BODY.format(name="unpinned_estimator"))
    fake_distribution("rlplug-extra", "guard_extra", "extra", BODY.format(name="extra_estimator"),
                      requires=['rlplug>=9; extra == "docs"'])
    names = plugins.get_registry().names("advantage_estimators")
    assert {"fits_estimator", "unpinned_estimator", "extra_estimator"} <= set(names)
    assert not [w for w in recwarn if issubclass(w.category, plugins.PluginLoadWarning)]


def fake_dist(*requires):
    return SimpleNamespace(name="rlplug-x", version="1.0", requires=list(requires))


@pytest.mark.parametrize(
    ("version", "requirement"),
    [("0.1.0", "rlplug>=0.1,<1"), ("0.7.3", "rlplug>=0.7,<1"), ("1.2.0", "rlplug>=1.2,<2"), ("2.0.0rc1", "rlplug>=2.0,<3")],
)
def test_generated_requirement_spans_to_the_next_major(version, requirement):
    assert rlplug_requirement(version) == requirement


def test_generated_requirement_accepts_this_version_and_refuses_the_next_major(monkeypatch):
    requirement = rlplug_requirement(rlplug.core.version.__version__)
    plugins.check_rlplug_requirement(fake_dist(requirement, "torch>=2.4"))
    monkeypatch.setattr(rlplug.core.version, "__version__", "1.0.0")
    with pytest.raises(plugins.IncompatiblePluginError, match=r"rlplug-x 1\.0 requires rlplug<1,>=0\.1 but rlplug 1\.0\.0"):
        plugins.check_rlplug_requirement(fake_dist(requirement))


def test_bundled_plugins_fit_this_rlplug():
    from importlib.metadata import distribution

    checked = []
    for source in plugins.plugin_sources().values():
        if source.distribution != "rlplug":
            plugins.check_rlplug_requirement(distribution(source.distribution))
            checked.append(source.distribution)
    assert "rlplug-grpo" in checked


def test_package_version_matches_the_metadata():
    from importlib.metadata import version

    assert version("rlplug") == rlplug.core.version.__version__
