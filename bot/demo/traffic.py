"""The simulated community's rows as what LINE, Discord and a shop would send superfan.

Pure: no I/O. Each row becomes the platform event the real adapter reads, carrying the row's
own time wherever the platform carries one:

* LINE ``message`` → a group message event, ``dm_in`` → a 1:1 text, ``checkin`` → the check-in
  keyword in a 1:1 chat (events carry ``timestamp``, so the past time is stored).
* Discord ``message`` → MESSAGE_CREATE in #general, ``dm_in`` → a DM; the message id is a
  snowflake made from the row's time, which is the time discord.py (and so superfan) reads.
* ``purchase`` → a signed order on the purchase hook (``time`` is the row's).
* Discord reactions and ``/checkin`` carry no time of their own (the bot stores its "now"), so
  only the last ``recent`` of those are sent.
* DMs only from the last ``recent`` too: older ones would all still be waiting for an answer,
  which no real inbox looks like.
* Skipped, with no adapter path: LINE reactions (LINE sends no reaction events), shares and
  referrals on both platforms (a shop or an invite would report them), meetup check-ins
  (``打卡 CODE`` / ``/checkin code`` need a meetup created first and carry no past time on Discord).

Past events carry no reply token: their answers would have gone out back then, and an answer
now would be a paid push. The last ``recent`` 1:1 events carry a real one from the emulator.
"""

from __future__ import annotations

import itertools
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: Discord's epoch (2015-01-01 UTC) in milliseconds; a snowflake's top bits count from it.
DISCORD_EPOCH_MS = 1_420_070_400_000
REACTIONS = ("👍", "❤️", "😂", "🥹", "🔥", "👏")
#: The LINE group that fans' group messages come from.
LINE_GROUP = "C" + "d" * 32


def snowflake(at: datetime, sequence: int) -> int:
    """A Discord id whose time is ``at`` (``sequence`` keeps ids made in the same millisecond apart)."""
    return ((int(at.timestamp() * 1000) - DISCORD_EPOCH_MS) << 22) | (sequence & 0x3FFFFF)


@dataclass
class Traffic:
    """What to send, per route, in time order."""

    line_events: list[dict[str, Any]] = field(default_factory=list)
    line_replies: list[int] = field(default_factory=list)  # indexes of events that get a reply token
    line_names: dict[str, str] = field(default_factory=dict)
    discord_messages: list[tuple[int, int, str]] = field(default_factory=list)  # (author, message id, text)
    discord_dms: list[tuple[int, int, str]] = field(default_factory=list)
    discord_reactions: list[tuple[int, int, str]] = field(default_factory=list)  # (user, message id, emoji)
    discord_checkins: list[int] = field(default_factory=list)
    discord_names: dict[int, str] = field(default_factory=dict)
    purchases: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return (len(self.line_events) + len(self.discord_messages) + len(self.discord_dms)
                + len(self.discord_reactions) + len(self.discord_checkins) + len(self.purchases))


def plan_traffic(rows: list[dict[str, str]], *, end: datetime, checkin_keyword: str | None,
                 recent: timedelta = timedelta(days=2)) -> Traffic:
    """Sort ``rows`` (the simulator's, time-ordered) into the events each adapter receives
    (LINE check-ins are skipped when the config has no check-in keyword)."""
    out = Traffic()
    since = end - recent
    sequence = itertools.count(1)
    recent_messages: list[int] = []
    for n, row in enumerate(rows):
        platform, kind, ext = row["platform"], row["kind"], row["external_id"]
        at = datetime.fromisoformat(row["occurred_at"])
        is_recent = at >= since
        if platform == "line":
            out.line_names.setdefault(ext, row["display_name"])
        else:
            out.discord_names.setdefault(int(ext), row["display_name"])
        if kind == "purchase":
            customer = "line_user_id" if platform == "line" else "discord_user_id"
            out.purchases.append({"order_id": row["event_id"], "amount": int(row["amount"]),
                                  "currency": row["currency"], "time": row["occurred_at"],
                                  "customer": {customer: ext}, "display_name": row["display_name"]})
        elif platform == "line" and (kind == "message" or (kind == "checkin" and checkin_keyword)
                                     or (kind == "dm_in" and is_recent)):
            group = kind == "message"
            text = checkin_keyword if kind == "checkin" and checkin_keyword else row["text"]
            if not group and is_recent:
                out.line_replies.append(len(out.line_events))
            out.line_events.append(line_text_event(ext, text, at, n, group=group))
        elif platform == "discord" and kind == "message":
            message_id = snowflake(at, next(sequence))
            out.discord_messages.append((int(ext), message_id, row["text"]))
            recent_messages.append(message_id)
        elif platform == "discord" and kind == "dm_in" and is_recent:
            out.discord_dms.append((int(ext), snowflake(at, next(sequence)), row["text"]))
        elif platform == "discord" and kind == "reaction" and is_recent and recent_messages:
            target = recent_messages[-1 - (n % min(len(recent_messages), 50))]
            out.discord_reactions.append((int(ext), target, REACTIONS[n % len(REACTIONS)]))
        elif platform == "discord" and kind == "checkin" and is_recent:
            out.discord_checkins.append(int(ext))
        else:
            out.skipped[f"{platform}:{kind}"] += 1
    return out


def line_text_event(user_id: str, text: str, at: datetime, n: int, *, group: bool) -> dict[str, Any]:
    """A LINE text message event as LINE posts it (``replyToken`` is added when one is issued)."""
    source = {"type": "group", "groupId": LINE_GROUP, "userId": user_id} if group else \
        {"type": "user", "userId": user_id}
    return {"type": "message", "mode": "active", "timestamp": int(at.timestamp() * 1000), "source": source,
            "webhookEventId": f"01DEMO{n:08d}{secrets.token_hex(6).upper()}",
            "deliveryContext": {"isRedelivery": False},
            "message": {"id": f"{900_000_000_000 + n}", "type": "text", "quoteToken": secrets.token_hex(8),
                        "text": text}}
