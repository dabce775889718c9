"""The source archive holds what a user needs, and nothing the repository keeps for itself."""

from __future__ import annotations

import tarfile
from pathlib import Path

from hatchling.builders.sdist import SdistBuilder

ROOT = Path(__file__).resolve().parent.parent


def test_sdist_holds_the_package_templates_units_and_docs_only(tmp_path: Path) -> None:
    built = next(iter(SdistBuilder(str(ROOT)).build(directory=str(tmp_path))))

    with tarfile.open(built) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tops = {name.split("/")[0] for name in names}
    assert tops == {
        "digest",
        "templates",
        "systemd",
        "subscribers.toml",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "PKG-INFO",
        ".gitignore",  # hatchling always adds it
    }
    assert "digest/cli.py" in names
    assert "templates/digest.html" in names
    assert not [n for n in names if n.endswith((".whl", ".db", ".pyc"))]
