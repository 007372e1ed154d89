"""Outcomes → LINE messages (SDK models). All text comes from ``bot/i18n/*.line.toml``."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from linebot.v3.messaging import ConfirmTemplate, Message, PostbackAction, TemplateMessage, TextMessage

from bot.i18n import t
from bot.i18n.errors import error_text
from bot.line_adapter.commands import AlreadyHandled, AskConfirm, Done, Refused
from bot.line_adapter.events import Plan
from bot.writer import Outcome
from crm.errors import CrmError
from crm.fan_actions import CheckinResult
from crm.ingest import Recorded

log = logging.getLogger(__name__)

MAX_TEXT = 4900


def text(body: str) -> TextMessage:
    return TextMessage(text=body[:MAX_TEXT])


def answer(plan: Plan, outcomes: Sequence[Outcome], locale: str) -> list[Message]:
    """What to send back for a committed plan (empty: nothing)."""
    if plan.respond == "join":
        return [text(t("line.join", locale))]
    if not outcomes:
        return []
    first = outcomes[0]
    if plan.respond in ("welcome", "welcome_back"):
        stored = isinstance(first, Recorded) and first.status == "stored"
        return [text(t(f"line.{plan.respond}", locale))] if stored else []
    if plan.respond == "command":
        return outcome(first, locale)
    return []


def outcome(result: Outcome, locale: str) -> list[Message]:
    """One command's outcome as messages."""
    if isinstance(result, AlreadyHandled):
        return []
    if isinstance(result, Refused):
        log.info("LINE %s refused: %s", result.command, result.detail)
        return [text(_refused(result, locale))]
    if isinstance(result, AskConfirm):
        return [_confirm(result.command, locale)]
    if isinstance(result, Done):
        return [text(_done(result, locale))]
    if isinstance(result, CrmError):
        log.warning("LINE command failed: %s", result)
    return [text(t("line.error", locale))]


def _refused(result: Refused, locale: str) -> str:
    """Why the command could not be done, plus where to go next when the command has a hint."""
    reason = error_text(result.error, locale)
    hint_key = f"line.{result.command}.hint"
    hint = t(hint_key, locale)
    return reason if hint == hint_key else f"{reason}\n{hint}"


def _checkin(result: CheckinResult, code: str | None, locale: str) -> str:
    if result.status == "opted_out":
        return t("line.checkin.opted_out", locale)
    if result.status == "unknown_code":
        return t("line.checkin.unknown_code", locale, code=code or "")
    if result.event_name:
        key = "event_ok" if result.status == "checked_in" else "event_already"
        return t(f"line.checkin.{key}", locale, event=result.event_name)
    key = "ok" if result.status == "checked_in" else "already"
    return t(f"line.checkin.{key}", locale, streak=result.streak)


def _done(result: Done, locale: str) -> str:
    data = result.data
    if result.command == "checkin":
        return _checkin(data["result"], data["code"], locale)
    if result.command == "my_code":
        return t("line.refer.my_code", locale, code=data["code"])
    if result.command == "me":
        return my_data(data["doc"], locale)
    if result.command == "forget":
        if not data["found"]:
            return t("line.forget.nothing", locale)
        return t("line.forget.done_kept_opt_out" if data.get("kept_opt_out") else "line.forget.done", locale)
    if result.command == "optout":
        return t("line.optout.done", locale)
    if result.command == "optin":
        return t("line.optin.done" if data["resumed"] else "line.optin.already", locale)
    if result.command == "cancel":
        return t("line.cancelled", locale)
    if result.command == "link_help":
        return t("line.link.how", locale)
    return t(f"line.{result.command}.ok", locale)


def _confirm(command: str, locale: str) -> TemplateMessage:
    question = t(f"line.{command}.ask", locale)
    return TemplateMessage(
        alt_text=question[:400],
        template=ConfirmTemplate(text=question[:240], actions=[
            PostbackAction(label=t("line.confirm.yes", locale)[:20], data=f"action={command}&confirm=yes",
                           display_text=t("line.confirm.yes", locale)),
            PostbackAction(label=t("line.confirm.no", locale)[:20], data=f"action={command}&confirm=no",
                           display_text=t("line.confirm.no", locale)),
        ]),
    )


def my_data(doc: dict[str, Any] | None, locale: str) -> str:
    """The fan's own view of their record (PDPA/GDPR access), short enough for one bubble."""
    if doc is None:
        return t("line.me.nothing", locale)
    none = t("line.me.none", locale)
    platforms = sorted({i["platform"] for i in doc["identities"]})
    counts = Counter(i["kind"] for i in doc.get("interactions", []))
    separator = ", " if locale == "en" else "、"
    recent = separator.join(f"{_kind(k, locale)} ×{n}" for k, n in counts.most_common())
    lines = [
        t("line.me.title", locale, name=doc["display_name"]),
        t("line.me.tier", locale, tier=doc["tier"], score=f"{doc['score']:.1f}"),
        t("line.me.accounts", locale, items=", ".join(p.upper() if p == "line" else p.title() for p in platforms)
          or none),
        t("line.me.preferences", locale, items=", ".join(doc["preferences"]) or none),
        t("line.me.recent", locale, items=recent or none),
    ]
    if doc.get("opted_out"):
        lines.append(t("line.me.opted_out", locale))
    lines.append(t("line.me.footer", locale))
    return "\n".join(lines)


def _kind(kind: str, locale: str) -> str:
    key = f"line.kind.{kind}"
    name = t(key, locale)
    return kind if name == key else name
