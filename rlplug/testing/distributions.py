"""Installed-looking distributions on disk, for tests of plugin loading without pip."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterable


def write_fake_distribution(
    site: str | Path,
    dist_name: str,
    module_name: str,
    entry_point: str,
    body: str,
    version: str = "1.0",
    requires: Iterable[str] = (),
) -> Path:
    """Write ``module_name.py`` and a ``.dist-info`` with an ``rlplug`` entry point under ``site``.

    With ``site`` on ``sys.path``, :mod:`importlib.metadata` finds the distribution as if
    pip had installed it. ``requires`` become ``Requires-Dist`` lines (e.g. ``"rlplug>=2,<3"``).
    Returns the dist-info directory.
    """
    site = Path(site)
    (site / f"{module_name}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    metadata = ["Metadata-Version: 2.1", f"Name: {dist_name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    (info / "entry_points.txt").write_text(f"[rlplug]\n{entry_point} = {module_name}\n")
    return info
