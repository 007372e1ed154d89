"""Command descriptions and names from the message catalogue.

Discord shows a command's default text to every language it has no translation for, so the
default is the English catalogue entry and :class:`CatalogueTranslator` adds zh-TW. Slash
command *names* stay English (``/checkin``) so staff instructions and screenshots match.
"""

from __future__ import annotations

from discord import Locale, app_commands

from bot.i18n import catalogue, t

#: Discord locales that get the zh-TW catalogue (Simplified Chinese readers read it too).
_CHINESE = {Locale.taiwan_chinese, Locale.chinese}


def text(key: str) -> app_commands.locale_str:
    """``discord.<key>`` as a translatable command string."""
    full = f"discord.{key}"
    return app_commands.locale_str(t(full, "en"), key=full)


class CatalogueTranslator(app_commands.Translator):
    """Translates strings made with :func:`text`; leaves everything else alone."""

    async def translate(self, string: app_commands.locale_str, locale: Locale,
                        context: app_commands.TranslationContextTypes) -> str | None:
        key = string.extras.get("key")
        if key is None or locale not in _CHINESE:
            return None
        return catalogue("zh-TW").get(key)
