"""Where the shipped files are: the project's ViT, the example images and the results table.

They live in the repository's top-level ``assets/`` folder.  The wheel carries the same
folder as the data-only package ``symlora_assets`` (``pyproject.toml`` maps it), so an
installed copy finds them through the import system from any working directory, and a
checkout (``PYTHONPATH`` or an editable install) uses its own ``assets/`` next to the code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ASSETS_PACKAGE = "symlora_assets"
_MARKER = Path("fmnist-vit") / "config.json"  # tells our assets from any other "assets" folder


class AssetsNotFoundError(FileNotFoundError):
    """Neither a checkout's ``assets/`` nor the installed ``symlora_assets`` package was found."""


def assets_dir() -> Path:
    """The folder holding ``fmnist-vit/``, ``examples/`` and ``results/``.

    A checkout's own ``assets/`` wins (so the files always match the code that is
    imported); otherwise the installed ``symlora_assets`` package is used.
    """
    checkout = Path(__file__).resolve().parents[2] / "assets"  # symlora/lab/resources.py → the repository root
    if (checkout / _MARKER).is_file():
        return checkout
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / _MARKER).is_file():
            return Path(location)
    raise AssetsNotFoundError(
        f"the shipped assets were not found (no {checkout} and no installed {ASSETS_PACKAGE!r} package): "
        "reinstall symlora from its wheel or run from a checkout"
    )


def asset_path(*parts: str) -> Path:
    """A path inside :func:`assets_dir`, e.g. ``asset_path("examples")`` (it may not exist)."""
    return assets_dir().joinpath(*parts)
