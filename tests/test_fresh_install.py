"""Published artefacts work: wheels of rlplug and every bundled plugin, a brand-new venv with
rlplug plus rlplug-grpo installed from those wheels alone, `rlplug plugins` listing exactly
that plugin, and a 2-step training run selecting its algorithm by name.

The whole check runs scripts/fresh_install_check.py (pip's cache keeps it to minutes)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "fresh_install_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fresh_install_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_wheels_install_into_a_fresh_venv_and_train(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--plugin", "grpo", "--algorithm", "dr_grpo", "--dependent", "ppo:ppo",
         "--workdir", str(tmp_path / "work"),
         "--json", str(tmp_path / "summary.json")],
        capture_output=True, text=True, timeout=900,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert result.returncode == 0 and summary["ok"], summary.get("error", result.stderr[-3000:])
    print(json.dumps(summary["seconds"]), summary["total_seconds"])  # shown with pytest -s

    bundled = sorted(tomllib.loads(p.read_text())["project"]["name"].replace("-", "_")
                     for p in REPO.glob("plugins/*/pyproject.toml"))
    assert sorted(name.split("-")[0] for name in summary["wheels"]) == sorted(["rlplug", *bundled])
    assert [row["name"] for row in summary["plugins_listed"]] == ["rlplug-grpo"]
    assert summary["plugins_listed"][0]["components"]["algorithms"] == [
        "bnpo", "cispo", "dapo", "dr_grpo", "gmpo", "grpo", "gspo", "luspo", "sapo", "vespo"
    ]
    work = (tmp_path / "work" / "venv").resolve()
    assert all(Path(path).resolve().is_relative_to(work) for path in summary["imported_from"].values())
    assert not any(r.startswith("rlplug") for r in summary["third_party_requirements"])
    assert summary["pip_check"] == "No broken requirements found."
    training = summary["training"]
    assert training == {**training, "algorithm": "dr_grpo", "algorithm_from": "rlplug-grpo", "advantage": "group_mean",
                        "advantage_from": "rlplug-grpo", "global_step": 2}
    assert len(training["rewards_logged"]) == 2
    assert "tests/test_rlplug_probe.py" in summary["new_plugin_files"]
    # rlplug-ppo from its wheel, its dependency on rlplug-grpo resolved from the wheels alone.
    assert summary["dependent_plugins_listed"] == ["rlplug-grpo", "rlplug-ppo"]
    assert summary["dependent_pip_check"] == "No broken requirements found."
    assert summary["dependent_training"] == {**summary["dependent_training"], "algorithm": "ppo",
                                             "algorithm_from": "rlplug-ppo", "global_step": 2}


# ---- negative controls: the script's checks fail when they should ------------------------


def test_listing_check_refuses_an_extra_or_missing_plugin():
    script = load_script()
    script.check_listing([{"name": "rlplug-grpo"}], "rlplug-grpo")
    with pytest.raises(script.CheckFailed, match=r"exactly rlplug-grpo, got \['rlplug-dpo', 'rlplug-grpo'\]"):
        script.check_listing([{"name": "rlplug-dpo"}, {"name": "rlplug-grpo"}], "rlplug-grpo")
    with pytest.raises(script.CheckFailed, match=r"got \[\]"):
        script.check_listing([], "rlplug-grpo")


def test_an_import_from_outside_the_venv_or_an_editable_install_is_refused(tmp_path):
    script = load_script()
    venv = tmp_path / "venv"
    inside = {"rlplug": str(venv / "lib" / "rlplug" / "__init__.py"), "plugin": str(venv / "lib" / "p.py"),
              "rlplug_direct_url": None}
    script.check_inside(inside, venv)
    with pytest.raises(script.CheckFailed, match="rlplug was imported from /work/src/rlplug"):
        script.check_inside({**inside, "rlplug": "/work/src/rlplug/__init__.py"}, venv)
    with pytest.raises(script.CheckFailed, match="not from a wheel"):
        script.check_inside({**inside, "rlplug_direct_url": '{"dir_info": {"editable": true}}'}, venv)


def test_requirements_from_the_index_exclude_rlplug_packages_and_extras(tmp_path):
    script = load_script()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(REPO / "plugins" / "rlplug-grpo")], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("rlplug_grpo-*.whl")
    assert script.third_party_requirements([wheel]) == ["torch>=2.4"]
    assert script.wheel_metadata(wheel)["Name"] == "rlplug-grpo"
    with pytest.raises(script.CheckFailed, match="no wheel was built for rlplug-dpo"):
        script.find_wheel([wheel], "rlplug-dpo")
