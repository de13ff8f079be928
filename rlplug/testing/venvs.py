"""A throwaway virtual environment layered on the current one, for pip-install tests."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def overlay_venv(path: str | Path) -> Path:
    """Create a venv at ``path`` that also sees this environment's packages; return its python.

    A ``.pth`` file adds this environment's site-packages (with its own ``.pth`` files, so
    editable installs work) after the new venv's own. ``pip install`` into the new venv
    (``python -m pip --python NEW install ...``) then tests a package's install without
    touching this environment or downloading rlplug, torch and TRL again.
    """
    path = Path(path)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "_rlplug_overlay.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def pip_install(python: Path, *args: str) -> subprocess.CompletedProcess:
    """Run this environment's pip against the venv of ``python`` (no network needed for --no-deps)."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", *args], capture_output=True, text=True
    )
