"""From published artefacts to a training run: wheels -> brand-new venv -> `rlplug plugins` -> train.

1. Builds wheels of rlplug and of every bundled plugin (plugins/*) with `pip wheel --no-deps`,
   from a clean copy of the source tree.
2. Creates a brand-new virtual environment and installs rlplug plus ONE plugin from those
   wheels alone (`--no-index --find-links`); torch (pinned, default torch==2.13.0) and the
   other dependencies come from the normal index and pip's cache.
3. Shows that `rlplug plugins --json` lists exactly that plugin, imported from the new venv.
4. Trains 2 steps on the tiny model with the plugin's algorithm selected by name.
5. Runs `rlplug new-plugin` from the installed wheel (the templates ship as package data).

Usage: python scripts/fresh_install_check.py [--plugin grpo] [--algorithm grpo] [--workdir DIR] [--json FILE]
Exit status 0 when every check holds; the summary (with the time of each phase) goes to stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "outputs", "output",
    "rlplug-output", "*.safetensors", "*.bin",
)

TRAIN = """
import json, sys
import rlplug
from rlplug.demo.arithmetic import train_dataset
from rlplug.demo.tiny import save_tiny_model

algorithm = sys.argv[1]
lora = None
if sys.argv[2:] == ["lora"]:
    from peft import LoraConfig
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
registry = rlplug.get_registry()
recipe = registry.get("algorithms", algorithm)
trainer = rlplug.build_trainer(
    algorithm, model=str(save_tiny_model("tiny-model")), reward_funcs=["arithmetic_exact_match"], peft_config=lora,
    train_dataset=train_dataset(), per_device_train_batch_size=8, num_generations=4, max_completion_length=4,
    max_steps=2, learning_rate=1e-3, bf16=False, gradient_checkpointing=False, report_to="none",
    save_strategy="no", logging_steps=1, output_dir="train-output",
)
trainer.train()
print(json.dumps({
    "algorithm": recipe.name,
    "algorithm_from": registry.source("algorithms", algorithm).distribution,
    "advantage": recipe.advantage,
    "advantage_from": registry.source("advantage_estimators", recipe.advantage).distribution,
    "global_step": trainer.state.global_step,
    "rewards_logged": [row["reward"] for row in trainer.state.log_history if "reward" in row],
}))
"""

WHERE = """
import json, rlplug, importlib, sys
from importlib.metadata import distribution
plugin = importlib.import_module(sys.argv[1])
direct = distribution("rlplug").read_text("direct_url.json")
print(json.dumps({"rlplug": rlplug.__file__, "plugin": plugin.__file__, "rlplug_direct_url": direct}))
"""


class CheckFailed(RuntimeError):
    """One step of the fresh-install check did not hold."""


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise CheckFailed(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def bundled_plugin_dirs(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.glob("plugins/*/pyproject.toml"))


def wheel_metadata(wheel: Path) -> Any:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())


def find_wheel(wheels: list[Path], distribution: str) -> Path:
    for wheel in wheels:
        if canonicalize_name(wheel_metadata(wheel)["Name"]) == canonicalize_name(distribution):
            return wheel
    raise CheckFailed(f"no wheel was built for {distribution}; built: {', '.join(w.name for w in wheels)}")


def third_party_requirements(wheels: list[Path]) -> list[str]:
    """Requires-Dist of the wheels, without rlplug's own distributions and without extras."""
    requirements = []
    for wheel in wheels:
        for line in wheel_metadata(wheel).get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name).startswith("rlplug"):
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            requirements.append(str(requirement))
    return sorted(set(requirements))


def check_listing(rows: list[dict[str, Any]], expected: str) -> None:
    names = [row["name"] for row in rows]
    if names != [expected]:
        raise CheckFailed(f"`rlplug plugins --json` should list exactly {expected}, got {names}")


def check_inside(paths: dict[str, str], venv: Path) -> None:
    for label in ("rlplug", "plugin"):
        if not Path(paths[label]).resolve().is_relative_to(venv.resolve()):
            raise CheckFailed(f"{label} was imported from {paths[label]}, not from the new venv {venv}")
    if paths["rlplug_direct_url"] is not None:
        raise CheckFailed(f"rlplug was installed from a path or URL, not from a wheel in --find-links: {paths['rlplug_direct_url']}")


def fresh_install_check(workdir: Path, plugin: str, algorithm: str, torch_pin: str, summary: dict[str, Any],
                        dependent: str | None = None) -> None:
    """Run every step, filling ``summary``; raise CheckFailed at the first that does not hold."""
    timings: dict[str, float] = {}
    summary.update({"plugin": f"rlplug-{plugin}", "algorithm": algorithm, "seconds": timings})

    def phase(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    source = workdir / "src"
    shutil.copytree(REPO, source, ignore=IGNORED)
    wheel_dir = workdir / "wheels"
    # setuptools here builds without an isolated environment (faster, offline); else pip fetches it
    no_isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    projects = [source, *bundled_plugin_dirs(source)]
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *no_isolation, "-w", str(wheel_dir),
         *map(str, projects)], cwd=workdir)
    wheels = sorted(wheel_dir.glob("*.whl"))
    summary["wheels"] = [w.name for w in wheels]
    if len(wheels) != len(projects):
        raise CheckFailed(f"{len(projects)} projects gave {len(wheels)} wheels: {summary['wheels']}")
    phase("build_wheels", start)

    start = time.perf_counter()
    venv = workdir / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=workdir)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    phase("create_venv", start)

    start = time.perf_counter()
    run([python, "-m", "pip", "install", "-q", "--no-compile", torch_pin], cwd=workdir, env=env)
    phase("install_torch", start)

    start = time.perf_counter()
    ours = [find_wheel(wheels, "rlplug"), find_wheel(wheels, f"rlplug-{plugin}")]
    run([python, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheel_dir), "--no-deps",
         "rlplug", f"rlplug-{plugin}"], cwd=workdir, env=env)
    requirements = third_party_requirements(ours)
    summary["third_party_requirements"] = requirements
    run([python, "-m", "pip", "install", "-q", "--no-compile", torch_pin, *requirements], cwd=workdir, env=env)
    summary["pip_check"] = run([python, "-m", "pip", "check"], cwd=workdir, env=env).strip()
    phase("install_rlplug_plugin_and_dependencies", start)

    start = time.perf_counter()
    rows = json.loads(run([str(venv / "bin" / "rlplug"), "plugins", "--json"], cwd=workdir, env=env))
    summary["plugins_listed"] = rows
    check_listing(rows, f"rlplug-{plugin}")
    paths = json.loads(run([python, "-c", WHERE, f"rlplug_{plugin}"], cwd=workdir, env=env))
    check_inside(paths, venv)
    summary["imported_from"] = {k: v for k, v in paths.items() if k != "rlplug_direct_url"}
    phase("list_plugins", start)

    start = time.perf_counter()
    training = json.loads(run([python, "-c", TRAIN, algorithm], cwd=workdir, env=env).strip().splitlines()[-1])
    summary["training"] = training
    if training["global_step"] != 2 or training["algorithm_from"] != f"rlplug-{plugin}":
        raise CheckFailed(f"training did not run 2 steps of rlplug-{plugin}'s {algorithm}: {training}")
    phase("train_2_steps", start)

    start = time.perf_counter()
    run([str(venv / "bin" / "rlplug"), "new-plugin", "probe", "--dir", str(workdir)], cwd=workdir, env=env)
    generated = sorted(str(p.relative_to(workdir / "rlplug-probe")) for p in (workdir / "rlplug-probe").rglob("*") if p.is_file())
    summary["new_plugin_files"] = generated
    if "tests/test_rlplug_probe.py" not in generated:
        raise CheckFailed(f"`rlplug new-plugin` from the wheel did not write its test: {generated}")
    run([python, "-c", "import rlplug.testing"], cwd=workdir, env=env)
    phase("new_plugin_from_wheel", start)

    if dependent is not None:
        start = time.perf_counter()
        dependent_plugin_check(workdir, python, venv, env, plugin, dependent, summary)
        phase("dependent_plugin_from_wheel", start)


def dependent_plugin_check(workdir: Path, python: str, venv: Path, env: dict[str, str], plugin: str,
                           dependent: str, summary: dict[str, Any]) -> None:
    """A second plugin that depends on the first (``NAME:ALGORITHM``, e.g. ``ppo:ppo`` on ``grpo``)
    installs from its wheel with pip resolving rlplug packages from the wheels alone, then trains
    its algorithm 2 steps (with LoRA: an actor-critic keeps its critic in a second adapter)."""
    name, algorithm = dependent.split(":")
    run([python, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(workdir / "wheels"),
         f"rlplug-{name}"], cwd=workdir, env=env)
    summary["dependent_pip_check"] = run([python, "-m", "pip", "check"], cwd=workdir, env=env).strip()
    rows = json.loads(run([str(venv / "bin" / "rlplug"), "plugins", "--json"], cwd=workdir, env=env))
    names = sorted(row["name"] for row in rows)
    summary["dependent_plugins_listed"] = names
    if names != sorted([f"rlplug-{plugin}", f"rlplug-{name}"]):
        raise CheckFailed(f"`rlplug plugins --json` should list rlplug-{plugin} and rlplug-{name}, got {names}")
    training = json.loads(run([python, "-c", TRAIN, algorithm, "lora"], cwd=workdir, env=env).strip().splitlines()[-1])
    summary["dependent_training"] = training
    if training["global_step"] != 2 or training["algorithm_from"] != f"rlplug-{name}":
        raise CheckFailed(f"training did not run 2 steps of rlplug-{name}'s {algorithm}: {training}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", default="grpo", help="the one bundled plugin to install (entry-point name)")
    parser.add_argument("--algorithm", default="grpo", help="the plugin's algorithm to train with")
    parser.add_argument("--dependent", help="then a plugin that depends on it, NAME:ALGORITHM (e.g. ppo:ppo)")
    parser.add_argument("--torch", default=os.environ.get("TORCH_PIN", "torch==2.13.0"), help="torch requirement")
    parser.add_argument("--workdir", help="keep everything here (default: a temporary directory, removed)")
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlplug-fresh-") as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] = {}
        try:
            fresh_install_check(workdir, args.plugin, args.algorithm, args.torch, summary, args.dependent)
            summary["ok"] = True
        except CheckFailed as failure:
            summary.update(ok=False, error=str(failure))
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
