"""One extension per feature. Every public module here is loaded at start-up (see :func:`discover`)."""

from __future__ import annotations

import pkgutil


def discover() -> list[str]:
    """Dotted names of the extensions in this package; modules starting with ``_`` are helpers."""
    return sorted(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
