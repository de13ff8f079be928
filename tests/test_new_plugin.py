"""`rlplug new-plugin NAME`: what it writes, the names it refuses, and that the result
installs with pip and passes its own tests."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rlplug.cli import main as cli_main
from rlplug.app.new_plugin import NewPluginError, create_plugin, plugin_names
from rlplug.testing import overlay_venv, pip_install


def test_generates_the_package_with_the_three_fixed_names(tmp_path, capsys):
    assert cli_main(["new-plugin", "probe", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "rlplug-probe"
    assert capsys.readouterr().out.splitlines() == [
        f"Created {root}", f"Next: pip install -e {root} && pytest {root}",
    ]
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "rlplug_probe/__init__.py", "rlplug_probe/advantages.py",
        "rlplug_probe/rewards.py", "tests/test_rlplug_probe.py",
    ]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "rlplug-probe"
    assert project["entry-points"]["rlplug"] == {"probe": "rlplug_probe"}
    assert project["dependencies"] == ["rlplug>=0.1,<1", "torch>=2.4"]
    for path in root.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")
    init = (root / "rlplug_probe" / "__init__.py").read_text()
    assert 'register("probe_median_baseline", median_baseline)' in init
    assert 'register("probe_digit_fraction", digit_fraction)' in init
    assert not [p for p in root.rglob("*") if p.is_file() and "$" in p.read_text()]  # every placeholder filled


def test_the_requirement_follows_the_installed_version(tmp_path):
    root = create_plugin("later", tmp_path, rlplug_version="3.4.1")
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"][0] == "rlplug>=3.4,<4"


def test_hyphenated_names():
    assert plugin_names("my-algo") == {
        "name": "my-algo", "dist": "rlplug-my-algo", "module": "rlplug_my_algo", "entry_point": "my_algo",
    }
    assert plugin_names("my_algo")["dist"] == "rlplug-my-algo"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rlplug-probe", "without the rlplug prefix: rlplug new-plugin probe"),
        ("Probe", "must be lowercase letters and digits"),
        ("2probe", "must be lowercase letters and digits"),
        ("my algo", "must be lowercase letters and digits"),
        ("probe-", "must be lowercase letters and digits"),
    ],
)
def test_bad_names_are_refused(name, message):
    with pytest.raises(NewPluginError, match=message):
        plugin_names(name)


def test_an_existing_directory_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "rlplug-probe").mkdir()
    (tmp_path / "rlplug-probe" / "mine.txt").write_text("keep")
    assert cli_main(["new-plugin", "probe", "--dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"rlplug new-plugin: {tmp_path / 'rlplug-probe'} already exists; choose another name or --dir\n"
    assert [p.name for p in (tmp_path / "rlplug-probe").iterdir()] == ["mine.txt"]


def run_generated_tests(python: Path, where: Path, plugin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pytest", plugin, "-q", "-p", "no:cacheprovider", *args],
                          cwd=where, capture_output=True, text=True, timeout=420)


@pytest.mark.slow
def test_generated_plugin_installs_with_pip_and_its_tests_pass(tmp_path):
    python = overlay_venv(tmp_path / "venv")
    assert subprocess.run([str(python), "-m", "rlplug.cli", "new-plugin", "probe"], cwd=tmp_path).returncode == 0
    install = pip_install(python, "--no-deps", "--no-build-isolation", "-e", str(tmp_path / "rlplug-probe"))
    assert install.returncode == 0, install.stderr
    # the plugin is installed in the new venv only
    assert subprocess.run([sys.executable, "-c", "import rlplug_probe"], capture_output=True).returncode == 1

    result = run_generated_tests(python, tmp_path, "rlplug-probe")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "7 passed" in result.stdout.splitlines()[-1]

    # Negative control: the generated tests fail once the estimator loses its NaN handling.
    advantages = tmp_path / "rlplug-probe" / "rlplug_probe" / "advantages.py"
    advantages.write_text(advantages.read_text().replace(
        "return torch.nan_to_num(rollout.ungrouped(rewards - median), nan=0.0)",
        "return rollout.ungrouped(rewards - median)",
    ))
    broken = run_generated_tests(python, tmp_path, "rlplug-probe", "-k", "property_checks and not catch")
    assert broken.returncode == 1
    assert "finite advantages fails on all_nan_group" in broken.stdout
