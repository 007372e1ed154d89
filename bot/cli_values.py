"""Reading option and argument values (text, whole numbers, numbers, paths, lists of them) with
errors from the catalogue.

Typer checks every value with a Pydantic ``TypeAdapter``: importing Pydantic costs a command about
0.1 s before it starts, and its errors are English ("Input should be a valid integer, unable to
parse string as an integer"). The types superfan's commands use are read here instead; anything
else (a choice, a date, a custom parser) keeps Typer's own reading.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from typer._click.exceptions import UsageError
from typer._coercion import RuntimeParam
from typer.models import ParameterInfo

from bot.cli_i18n import label
from bot.i18n import t

_SIMPLE = (str, int, float, bool, Path)
_TRUE, _FALSE = {"1", "true", "yes", "y", "on"}, {"0", "false", "no", "n", "off", ""}
#: Path settings this module honours; a parameter asking for anything else keeps Typer's reading.
_PATH_DEFAULTS = {"writable": False, "readable": True, "allow_dash": False, "path_type": None}


class ValueProblem(UsageError):
    """A value that cannot be used, already worded for the creator (exit 2)."""

    def __init__(self, message: str, ctx: Any = None) -> None:
        super().__init__(message, ctx)


def install(param: Any) -> None:
    """Let ``param`` be read by :class:`CatalogueValue` when its type is one of the simple ones."""
    if getattr(param, "_runtime_param", None) is not None:
        return
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or descriptor.file_annotation is not None or descriptor.is_choice:
        return
    annotation = descriptor.annotation
    item = get_args(annotation)[0] if get_origin(annotation) is list and len(get_args(annotation)) == 1 else annotation
    info: ParameterInfo = descriptor.parameter_info
    if item not in _SIMPLE or getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
        return
    if item is Path and any(getattr(info, k, v) != v for k, v in _PATH_DEFAULTS.items()):
        return
    param._runtime_param = CatalogueValue(parameter_info=info, annotation=annotation, item=item)


@dataclass(frozen=True)
class CatalogueValue(RuntimeParam):
    """A value read as ``item`` (``str``, ``int``, ``float``, ``bool`` or ``Path``), or each of a list's."""

    item: type = str

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, list | tuple):
            return [self._one(v, param, ctx) for v in value]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Any) -> Any:
        item = self.item
        locale = getattr(ctx.find_root().command, "locale", None) if ctx is not None else None
        name = label(ctx.command, param, locale or "zh-TW") if ctx is not None else str(param.name)
        if item is str:
            return value if isinstance(value, str) else str(value)
        if item is bool:
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in _TRUE | _FALSE:
                return str(value).strip().lower() in _TRUE
            raise ValueProblem(t("help.errors.not_bool", locale, param=name, value=value), ctx)
        if item is Path:
            return self._path(value, name, locale, ctx)
        number: Any
        try:
            number = value if isinstance(value, item) and not isinstance(value, bool) else item(str(value).strip())
        except ValueError:
            raise ValueProblem(t(f"help.errors.not_{item.__name__}", locale, param=name, value=value), ctx) from None
        info = self.parameter_info
        if (info.min is not None and number < info.min) or (info.max is not None and number > info.max):
            if info.clamp:
                return min(max(number, info.min if info.min is not None else number),
                           info.max if info.max is not None else number)
            key = "out_of_range" if info.min is not None and info.max is not None else \
                "too_small" if info.min is not None else "too_big"
            raise ValueProblem(t(f"help.errors.{key}", locale, param=name, value=value, min=info.min, max=info.max),
                               ctx)
        return number

    def _path(self, value: Any, name: str, locale: str | None, ctx: Any) -> Path:
        info = self.parameter_info
        path = Path(value)
        if info.resolve_path:
            path = Path(os.path.realpath(path))
        try:
            mode = path.stat().st_mode
        except OSError:
            if info.exists:
                raise ValueProblem(t("help.errors.no_such_path", locale, param=name, value=value), ctx) from None
            return path
        if not info.dir_okay and stat.S_ISDIR(mode):
            raise ValueProblem(t("help.errors.is_a_directory", locale, param=name, value=value), ctx)
        if not info.file_okay and stat.S_ISREG(mode):
            raise ValueProblem(t("help.errors.is_a_file", locale, param=name, value=value), ctx)
        return path
