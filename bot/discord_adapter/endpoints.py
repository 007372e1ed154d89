"""Point discord.py at a Discord-compatible server (the loopback emulator in tests and demos).

discord.py 2.7 builds every REST URL, including interaction callbacks and webhook follow-ups
(``discord.webhook.async_`` imports the same ``Route`` class), from ``Route.BASE``. A plain
``Client`` connects to ``DiscordWebSocket.DEFAULT_GATEWAY`` without calling ``GET /gateway``
and appends ``?v=10&encoding=json&compress=zlib-stream`` itself; reconnects use the
``resume_gateway_url`` from READY. So these two class attributes are the whole override.
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

DEFAULT_API_BASE = f"https://discord.com/api/v{discord.http.INTERNAL_API_VERSION}"
DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg/"


def configure_endpoints(api_base: str, gateway_url: str) -> None:
    """Idempotent; ``configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)`` restores Discord."""
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
