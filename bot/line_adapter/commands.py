"""What a fan can ask the LINE account: check in, link Discord, referrals, see / stop / erase their data.

Parsing is forgiving the way fans type on phones: full-width letters and spaces (``ＣＨＥＣＫＩＮ``,
``打卡　ABC``), zero-width characters pasted along, any case. Each command runs as one writer
:class:`~bot.writer.Action` in the webhook's transaction and returns an outcome that ``render``
turns into LINE messages. Each command event is claimed in ``processed_events``
(:func:`crm.processed_events.claim_event`) in the same transaction as its effect, so a
redelivered webhook event is answered with :class:`AlreadyHandled` (no second confirmation, no
second effect).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy.ext.asyncio import AsyncSession

from bot.writer import Action
from crm import fan_actions
from crm.errors import BadInput, CrmError
from crm.identity import fan_by_identity
from crm.privacy import forget_fan, set_opt_out
from crm.processed_events import claim_event, set_event_result
from crm.profiles import fan_documents
from crm.settings import CrmSettings

PLATFORM = "line"

_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,31}")

ME: tuple[str, ...] = ("我的資料", "me", "my data")
OPTOUT: tuple[str, ...] = ("停止追蹤", "optout", "opt out", "opt-out")
OPTIN: tuple[str, ...] = ("恢復追蹤", "optin", "opt in", "opt-in")
FORGET: tuple[str, ...] = ("刪除我的資料", "forget me", "forgetme", "forget-me")
MY_CODE: tuple[str, ...] = ("推薦碼", "my code", "refcode", "referral code")
LINK: tuple[str, ...] = ("綁定", "link")
REFER: tuple[str, ...] = ("推薦", "ref")


@dataclass(frozen=True)
class Command:
    """A parsed request: ``name`` is one of checkin, link, link_help, refer, my_code, me, optout, optin,
    forget, optout_confirm, forget_confirm, cancel."""

    name: str
    code: str | None = None


def normalise(text: str) -> str:
    """NFKC (full-width → ASCII, ideographic space → space), invisible characters out, spaces collapsed."""
    folded = unicodedata.normalize("NFKC", text)
    if _INVISIBLE.search(folded):  # rare; str.translate would look up every character
        folded = _INVISIBLE.sub("", folded)
    return " ".join(folded.split())


def parse_text(text: str, checkin_keywords: Sequence[str], *, private: bool = True) -> Command | None:
    """The command in a message, or None for ordinary talk. Groups (``private=False``) only check in."""
    said = normalise(text)
    if not said or len(said) > 80:
        return None
    low = said.casefold()
    if low[0] not in _first_letters(tuple(checkin_keywords)):
        return None  # most messages: nothing can match, so skip the keyword loops
    if private:
        for names, command in ((ME, "me"), (OPTOUT, "optout"), (OPTIN, "optin"), (FORGET, "forget"),
                               (MY_CODE, "my_code")):
            if low in names:
                return Command(command)
    for keyword in _normalised(tuple(checkin_keywords)):
        code = _after(said, keyword)
        if code is not None:
            return Command("checkin", code or None)
    if private:
        for names, command in ((LINK, "link"), (REFER, "refer")):
            for word in names:
                code = _after(said, word)
                if code:
                    return Command(command, code)
    return None


@functools.lru_cache(maxsize=16)
def _first_letters(checkin_keywords: tuple[str, ...]) -> frozenset[str]:
    """The first letter (normalised, casefolded) of every command and keyword: a command starts with one."""
    words = (*ME, *OPTOUT, *OPTIN, *FORGET, *MY_CODE, *LINK, *REFER, *checkin_keywords)
    return frozenset(form[0] for w in words for form in (w.casefold(), normalise(w).casefold()) if form)


@functools.lru_cache(maxsize=16)
def _normalised(keywords: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(normalise(k) for k in keywords)


def _after(said: str, word: str) -> str | None:
    """``""`` if ``said`` is just ``word``, the code if it is ``word CODE``, else None.

    A Latin keyword needs a space before the code (``linked`` is not ``link ed``); a CJK one
    may be followed by the code directly (``打卡ABC123``).
    """
    if not word or not said.casefold().startswith(word.casefold()):
        return None
    rest = said[len(word):]
    if not rest:
        return ""
    if word.isascii() and not rest.startswith(" "):
        return None
    rest = rest.strip()
    return rest if _CODE.fullmatch(rest) else None


def parse_postback(data: str) -> Command | None:
    """Postback data from our own buttons: ``action=checkin[&code=X]``, ``action=optout&confirm=yes``,
    the rich menu's ``action=me`` and ``action=link`` …"""
    fields = {k: v[0] for k, v in parse_qs(data or "", keep_blank_values=True).items()}
    action = fields.get("action", "")
    confirmed = fields.get("confirm") == "yes"
    if action == "checkin":
        code = normalise(fields.get("code", ""))
        return Command("checkin", code if _CODE.fullmatch(code) else None)
    if action in ("optout", "forget"):
        return Command(f"{action}_confirm" if confirmed else "cancel")
    if action == "cancel":
        return Command("cancel")
    if action in ("me", "my_code"):  # rich menu buttons (``superfan line richmenu``)
        return Command(action)
    if action == "link":  # a button cannot carry the code: say how to get and send one
        return Command("link_help")
    return None


# outcomes (rendered by render.py)

@dataclass(frozen=True)
class AlreadyHandled:
    """A redelivered event whose command already ran: nothing more to do or say."""


@dataclass(frozen=True)
class Refused:
    """The CRM said no (an unknown or expired code, a self-referral …); ``error`` says why, in any language."""

    command: str
    error: CrmError

    @property
    def detail(self) -> str:
        """The English reason, for logs."""
        return str(self.error)


@dataclass(frozen=True)
class Done:
    """A command that worked; ``data`` carries what the answer shows."""

    command: str
    data: dict[str, Any]


@dataclass(frozen=True)
class AskConfirm:
    """Opt-out and erasure ask first, with a confirm button (a postback)."""

    command: str


def action_for(command: Command, *, user_id: str, event_id: str, occurred_at: datetime,
               settings: CrmSettings) -> Action:
    """The writer action carrying out ``command`` for the LINE user ``user_id``."""

    async def run(session: AsyncSession, now: datetime) -> object:
        if not await claim_event(session, PLATFORM, event_id, now):
            return AlreadyHandled()
        outcome: object
        try:
            async with session.begin_nested():
                outcome = await _execute(session, now, command, user_id, event_id, occurred_at, settings)
        except BadInput as exc:
            outcome = Refused(command.name, exc)
        await set_event_result(session, PLATFORM, event_id, _result(outcome))
        return outcome

    return Action(f"line {command.name}", run)


def _result(outcome: object) -> str:
    """What a handled command came to, kept beside its claim (no personal data: names, codes stay out)."""
    if isinstance(outcome, Done):
        return f"done:{outcome.command}"
    if isinstance(outcome, AskConfirm):
        return f"asked:{outcome.command}"
    if isinstance(outcome, Refused):
        return f"refused:{outcome.command}: {outcome.detail}"
    return type(outcome).__name__


async def _execute(session: AsyncSession, now: datetime, command: Command, user_id: str, event_id: str,
                   occurred_at: datetime, settings: CrmSettings) -> object:
    name = command.name
    if name == "checkin":
        result = await fan_actions.checkin(session, settings, platform=PLATFORM, external_id=user_id,
                                           display_name=None, at=occurred_at, now=now,
                                           source_event_id=event_id, code=command.code)
        return Done("checkin", {"result": result, "code": command.code})
    if name == "link_help":
        return Done("link_help", {})
    if name == "link":
        fan_id = await fan_actions.redeem_link_code(session, settings, command.code or "", platform=PLATFORM,
                                                    external_id=user_id, display_name=None, now=now)
        return Done("link", {"fan_id": fan_id})
    if name == "refer":
        owner = await fan_actions.redeem_referral(session, settings, command.code or "", platform=PLATFORM,
                                                  external_id=user_id, display_name=None, at=occurred_at,
                                                  now=now, source_event_id=event_id)
        return Done("refer", {"owner_id": owner})
    if name == "my_code":
        fan_id = await fan_actions.ensure_fan(session, settings, platform=PLATFORM, external_id=user_id,
                                              display_name=None, now=now)
        return Done("my_code", {"code": await fan_actions.referral_code(session, fan_id)})
    if name in ("optout", "forget"):
        return AskConfirm(name)
    if name == "optout_confirm":
        fan_id = await fan_actions.ensure_fan(session, settings, platform=PLATFORM, external_id=user_id,
                                              display_name=None, now=now)
        await set_opt_out(session, fan_id, True)
        return Done("optout", {})
    fan = await fan_by_identity(session, PLATFORM, user_id)
    if name == "optin":
        if fan is not None and fan.opted_out:
            await set_opt_out(session, fan.id, False)
            return Done("optin", {"resumed": True})
        return Done("optin", {"resumed": False})
    if name == "forget_confirm":
        if fan is None:
            return Done("forget", {"found": False})
        forgotten = await forget_fan(session, settings, fan.id, now)
        return Done("forget", {"found": True, "kept_opt_out": forgotten.kept_opt_out})
    if name == "me":
        if fan is None:
            return Done("me", {"doc": None})
        (doc,) = await fan_documents(session, [fan], settings, now, interactions=5)
        return Done("me", {"doc": doc})
    return Done("cancel", {})
