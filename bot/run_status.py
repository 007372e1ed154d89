"""What ``superfan run`` says once it has started: each part (web app, LINE, Discord, purchase hook,
scheduler) on or off, and for a part that is off, the setting or environment variable that turns it
on. A creator who starts it for the first time sees at once why LINE messages do not arrive."""

from __future__ import annotations

import os
from collections.abc import Mapping

from bot.config import Config
from bot.i18n import t


def announcement(config: Config, where: str, locale: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The lines, in ``locale``; ``where`` is what :func:`bot.app.run` reports when ready (it starts
    with the web app's base URL when the web app listens)."""
    env = os.environ if environ is None else environ
    url = where.split(" ", 1)[0] if where.startswith("http") else None
    web, line, discord = config.web, config.line, config.discord
    lines = [t("run.web_on", locale, url=url) if url else t("run.web_off", locale)]
    if not line.enabled:
        lines.append(t("run.line_off", locale, secret_env=line.channel_secret_env,
                       token_env=line.channel_access_token_env))
    else:
        lines.append(t("run.line_on", locale, url=url, path=line.webhook_path) if url else t("run.line_no_web", locale))
    if not discord.enabled:
        lines.append(t("run.discord_off", locale, token_env=discord.token_env))
    else:
        lines.append(t("run.discord_on", locale, guild=discord.guild_id))
        if not discord.inbox_channel_id:
            lines.append(t("run.discord_no_inbox", locale))
    if not url:
        lines.append(t("run.purchase_no_web", locale, secret_env=web.purchase_secret_env))
    elif not env.get(web.purchase_secret_env):
        lines.append(t("run.purchase_no_secret", locale, secret_env=web.purchase_secret_env))
    else:
        lines.append(t("run.purchase_on", locale, url=url, path=web.purchase_path, secret_env=web.purchase_secret_env))
    to = []
    if discord.enabled and discord.staff_channel_id:
        to.append(t("run.digest_to_discord", locale, channel=discord.staff_channel_id))
    if line.enabled and config.digest.line_user_id:
        to.append(t("run.digest_to_line", locale))
    lines.append(t("run.scheduler_on", locale, at=config.digest.at, timezone=config.creator.timezone,
                   to=t("run.sep", locale).join(to) if to else t("run.digest_nowhere", locale)))
    return lines
