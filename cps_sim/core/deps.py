"""Third-party modules the models import lazily, with one clear error when one is missing.

pvlib, windpowerlib, demandlib and rainflow are core dependencies of cps-sim
(``pip install -e .`` installs them).  A broken or partial environment (installed
with ``--no-deps``, a package removed afterwards) then gets one line naming the
module, what needs it and how to fix it, instead of a ``ModuleNotFoundError``
traceback from deep inside a run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cps_sim.core.errors import CpsSimError


class MissingDependencyError(CpsSimError):
    """A module cps_sim needs is not importable."""

    exit_code = 2


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` (one line)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingDependencyError(
            f"cps-sim needs the Python package {top!r} for {needed_for}, but it cannot be "
            f"imported ({type(exc).__name__}: {exc}); it is a dependency of cps-sim: "
            f"pip install {top}  (or reinstall cps-sim: pip install -e .)"
        ) from None
