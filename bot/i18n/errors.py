"""The one way a :class:`~crm.errors.CrmError` becomes text for a person: ``errors.<code>`` in the catalogue.

Adapters and the CLI call :func:`error_text` and never show ``str(error)`` themselves; the English
``str(error)`` is what the logs keep and what a reader sees only when the catalogue has no entry
for the code in their language (a code added to ``crm`` before its translation).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bot.i18n import DEFAULT_LOCALE, catalogue, pick_locale
from crm.errors import CrmError

log = logging.getLogger(__name__)

PREFIX = "errors."
_SEPARATORS = {"zh-TW": "、", "en": ", "}


def error_text(exc: CrmError, locale: str | None) -> str:
    """``exc`` in ``locale`` (zh-TW, en, or a platform locale such as ``en-US``), params filled in."""
    loc = pick_locale(locale)
    template = catalogue(loc).get(PREFIX + exc.code)
    if template is None:
        log.debug("no %s text for error code %r; showing the English message", loc, exc.code)
        return str(exc)
    params = {name: _param(value, loc) for name, value in exc.params.items()}
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        log.warning("the %s text for error code %r does not fit its params %s", loc, exc.code, sorted(params))
        return str(exc)


def _param(value: object, locale: str) -> object:
    """A param as the reader sees it: the cause rendered too, a list joined, a translated value picked."""
    if isinstance(value, CrmError):
        return error_text(value, locale)
    if isinstance(value, Mapping):
        picked = value.get(locale, value.get(DEFAULT_LOCALE, next(iter(value.values()), "")))
        return _param(picked, locale)
    if isinstance(value, list | tuple):
        return _SEPARATORS.get(locale, ", ").join(str(_param(v, locale)) for v in value)
    return value
