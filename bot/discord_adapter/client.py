"""The discord.py bot that ``superfan run`` starts: intents, extensions, one unit of work per event.

``start_discord(crm)`` is the whole public surface for the composition root: it points discord.py
at the configured endpoints (Discord, or a loopback emulator), starts the client as a task on the
running loop and returns once the bot is ready — or raises :class:`DiscordStartError` with what to
fix (a privileged intent not enabled in the developer portal, a rejected token, no answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import discord
from discord.ext import commands
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import DiscordConfig
from bot.discord_adapter.backlog import IntakeBacklog
from bot.discord_adapter.cogs import discover
from bot.discord_adapter.endpoints import configure_endpoints
from bot.discord_adapter.errors import SuperfanTree
from bot.discord_adapter.localise import CatalogueTranslator
from bot.discord_adapter.roles import RoleReport, reconcile_roles
from bot.write_failures import StorageUnavailable, transient
from bot.writer import Action, GroupWriter, Op, Outcome, Rejected
from crm.clock import Clock, utcnow
from crm.errors import CrmError
from crm.ingest import Recorded, record_many
from crm.interaction import InteractionIn
from crm.settings import CrmSettings

if TYPE_CHECKING:
    from datetime import datetime

    from bot.app import Crm

log = logging.getLogger(__name__)
T = TypeVar("T")

INTENTS_HELP = (
    "Discord refused the privileged gateway intents superfan needs. Open "
    "https://discord.com/developers/applications, pick the bot's application, go to Bot → "
    "Privileged Gateway Intents, enable SERVER MEMBERS INTENT and MESSAGE CONTENT INTENT, save, "
    "and start superfan again."
)


class DiscordStartError(RuntimeError):
    """The bot could not connect; ``str()`` says what to fix, in one line.

    ``transient`` is true when trying again later may work (Discord unreachable, answering 5xx,
    or not ready in time), false when something must be fixed first (token, intents).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def intents() -> discord.Intents:
    """Guilds, members, guild and DM messages with content, reactions, invites.

    ``members`` and ``message_content`` are privileged: they must be enabled in the developer
    portal, or Discord closes the gateway with 4014 (see :data:`INTENTS_HELP`).
    """
    value = discord.Intents.none()
    value.guilds = True
    value.members = True
    value.guild_messages = True
    value.dm_messages = True
    value.message_content = True
    value.guild_reactions = True
    value.dm_reactions = True
    value.invites = True
    return value


#: Longest rate-limit wait slept out in a call (discord.py's least); longer ones wait in the outbox.
MAX_RATELIMIT_WAIT_S = 30.0


class SuperfanBot(commands.Bot):
    """A ``commands.Bot`` that knows the CRM. Cogs reach everything through it."""

    def __init__(self, crm: Crm, *, clock: Clock = utcnow, guild_ready_timeout: float = 2.0) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents(),
            tree_cls=SuperfanTree,
            guild_ready_timeout=guild_ready_timeout,
            allowed_mentions=discord.AllowedMentions.none(),
            max_ratelimit_timeout=MAX_RATELIMIT_WAIT_S,
        )
        self.crm = crm
        self.clock = clock
        self.ready_event = asyncio.Event()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._background: set[asyncio.Task[None]] = set()
        self.on_tier_moves: list[Callable[[], None]] = []
        #: ``superfan run``'s group-commit writer: intake events share its transactions with the
        #: LINE webhooks (one writer, commits in groups); without one, each event commits alone.
        self.writer: GroupWriter | None = None
        #: Intake that met unavailable storage, retried in order (Discord never redelivers).
        self.backlog = IntakeBacklog(self.store)

    @property
    def config(self) -> DiscordConfig:
        return self.crm.config.discord

    @property
    def settings(self) -> CrmSettings:
        return self.crm.settings

    @property
    def default_locale(self) -> str:
        return self.crm.config.creator.locale

    def now(self) -> datetime:
        return self.clock()

    @property
    def command_guild(self) -> discord.Object | None:
        """Commands live in the configured server (available at once), else globally."""
        return discord.Object(self.config.guild_id) if self.config.guild_id else None

    def in_scope(self, guild_id: int | None) -> bool:
        """Whether events from this guild count (every guild when ``guild_id`` is 0)."""
        return guild_id is not None and (not self.config.guild_id or guild_id == self.config.guild_id)

    async def setup_hook(self) -> None:
        await self.tree.set_translator(CatalogueTranslator())
        for name in discover():
            await self.load_extension(name)
        if self.config.sync_commands:
            synced = await self.tree.sync(guild=self.command_guild)
            log.info("registered %d application commands (%s)", len(synced),
                     f"guild {self.config.guild_id}" if self.config.guild_id else "global")

    async def on_ready(self) -> None:
        log.info("Discord ready as %s (%s) in %d server(s)", self.user, self.user.id if self.user else "?",
                 len(self.guilds))
        self.ready_event.set()

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: messages are only intake (the Intake cog's listener still runs)."""

    async def transact(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in one database transaction (the unit of work of one event or command).

        A unique-constraint race (the same Discord event handled twice at once, e.g. around a
        gateway reconnect) is retried once: the retry sees the other transaction's row and reports
        a duplicate instead of failing. A busy or unreachable database raises
        :class:`~bot.writer.StorageUnavailable` (the user is asked to try again in a moment).
        Shutdown waits for units in flight (:meth:`idle`).
        """
        with self._unit():
            try:
                try:
                    async with self.crm.sessions.begin() as session:
                        return await work(session)
                except IntegrityError:
                    log.debug("unique-constraint race; retrying the unit of work once")
                    async with self.crm.sessions.begin() as session:
                        return await work(session)
            except Exception as exc:
                if transient(exc):
                    raise StorageUnavailable(f"database unavailable: {type(exc).__name__}") from exc
                raise

    async def read(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run read-only ``work`` (a fan card, stats) on a snapshot: on SQLite a write transaction
        would take the write lock, waiting for the group writer and then holding it up."""
        with self._unit():
            async with self.crm.read() as session:
                return await work(session)

    @contextlib.contextmanager
    def _unit(self) -> Iterator[None]:
        """Count a unit of work in flight; shutdown waits for them (:meth:`idle`)."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def store(self, op: Op) -> Outcome:
        """Commit one op now: in the shared writer's next group, else in a transaction of its own.

        Raises :class:`~bot.writer.StorageUnavailable` (or ``WriterClosed``) when it was not
        committed. An action's expected failure (:class:`~crm.errors.CrmError`) is its outcome.
        """
        if self.writer is not None:
            with self._unit():
                (outcome,) = await self.writer.submit([op])
            if isinstance(op, Action):
                self.tiers_moved()  # an action may have moved a tier; a spare wake-up costs one read
            return outcome
        now = self.now()

        async def work(session: AsyncSession) -> tuple[Outcome, bool]:
            if isinstance(op, InteractionIn):
                result = await record_many(session, [op], self.settings, now)
                return result.results[0], bool(result.tier_moves)
            try:
                async with session.begin_nested():
                    return await op.run(session, now), True
            except CrmError as exc:
                return exc, False

        outcome, moved = await self.transact(work)
        if moved:
            self.tiers_moved()
        return outcome

    async def intake(self, op: Op) -> Outcome | None:
        """Store an intake event (message, reaction, DM, join, leave, delete), never losing it:
        when storage is unavailable it is kept and retried in order (None: queued, see backlog.py)."""
        return await self.backlog.submit(op)

    async def record(self, item: InteractionIn) -> Recorded | None:
        """Store one intake interaction (see :meth:`intake`); None when it was queued."""
        outcome = await self.intake(item)
        return outcome if isinstance(outcome, Recorded) else None

    async def run_action(self, action: Action) -> Any:
        """Run a command's action on the same path as LINE's (the writer when there is one).

        Raises its :class:`~crm.errors.CrmError` for the error handler to show, and
        ``StorageUnavailable`` when it was not stored (the user is asked to try again).
        """
        outcome = await self.store(action)
        if isinstance(outcome, CrmError):
            raise outcome
        if isinstance(outcome, Rejected):
            raise RuntimeError(f"{action.name} could not be stored: {outcome.reason}")
        return outcome

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until no unit of work is running (shutdown: nothing received is half-written)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    def tiers_moved(self) -> None:
        """Called after a unit of work changed tiers: wakes the role sync (see roles.py)."""
        for callback in self.on_tier_moves:
            callback()

    def background(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        """A long-running task that :meth:`close` cancels."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().close()


@dataclass
class DiscordHandle:
    """The running bot, as ``superfan run`` holds it."""

    client: SuperfanBot
    task: asyncio.Task[None]

    async def close(self, timeout: float = 10.0) -> None:
        """Disconnect, then let units of work already received finish writing."""
        await self.client.close()
        try:
            await self.client.idle(timeout)
        except TimeoutError:
            log.warning("Discord units of work still running after %.0fs at shutdown", timeout)
        await self.client.backlog.close()  # one more try for intake still waiting for storage
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.task, timeout)

    async def reconcile_roles(self) -> RoleReport:
        """Make every member's tier roles match the CRM (schedule it, e.g. hourly and after start-up)."""
        return await reconcile_roles(self.client, self.client.crm)


def _explain(exc: BaseException | None, config: DiscordConfig) -> str:
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return INTENTS_HELP
    if isinstance(exc, discord.LoginFailure):
        return (f"Discord rejected the bot token in ${config.token_env}: copy a fresh one from the "
                "developer portal (Bot → Reset Token) into that environment variable.")
    if exc is None:
        return "the Discord client stopped before it was ready"
    network = _network_cause(exc)
    if network is not None:
        return f"could not connect to Discord (gateway {config.gateway_url}, API {config.api_base}): {network}"
    return f"could not start the Discord bot: {type(exc).__name__}: {exc}"


def _transient(exc: BaseException | None) -> bool:
    """Whether a failed start may work later: the network or Discord's side, not our settings."""
    if exc is None or isinstance(exc, discord.LoginFailure | discord.PrivilegedIntentsRequired):
        return False
    return _network_cause(exc) is not None or isinstance(exc, discord.DiscordServerError)


def _network_cause(exc: BaseException) -> BaseException | None:
    """The connection error behind ``exc``, if any.

    discord.py 2.7 reconnecting after a first connection that never opened fails with an
    AttributeError raised while handling the real cause, so the chain is searched.
    """
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError | aiohttp.ClientError | discord.GatewayNotFound | discord.ConnectionClosed):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _log_exit(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        log.error("Discord bot stopped: %s", INTENTS_HELP)
    elif exc is not None:
        log.error("Discord bot stopped", exc_info=exc)


async def start_discord(
    crm: Crm,
    *,
    token: str | None = None,
    clock: Clock = utcnow,
    guild_ready_timeout: float = 2.0,
    writer: GroupWriter | None = None,
) -> DiscordHandle:
    """Connect the bot on the running loop and return once it is ready.

    ``token`` defaults to the environment variable named by ``[discord] token_env``. With
    ``writer`` (``superfan run`` passes its one), intake events are committed in its groups, and
    tier changes from any source (a LINE purchase too) wake the role sync at once.
    Raises :class:`DiscordStartError` (after closing the client) when Discord refuses.
    """
    config = crm.config.discord
    token = token or crm.config.secret(config.token_env)
    configure_endpoints(config.api_base, config.gateway_url)
    bot = SuperfanBot(crm, clock=clock, guild_ready_timeout=guild_ready_timeout)
    if writer is not None:
        bot.writer = writer
        writer.on_tier_moves.append(bot.tiers_moved)
    try:
        return await _connect(bot, token, config)
    except BaseException:
        if writer is not None:
            writer.on_tier_moves.remove(bot.tiers_moved)  # a bot that never started wants no wake-ups
        raise


async def _connect(bot: SuperfanBot, token: str, config: DiscordConfig) -> DiscordHandle:
    task = asyncio.create_task(bot.start(token, reconnect=True), name="superfan-discord")
    ready = asyncio.create_task(bot.ready_event.wait())
    try:
        await asyncio.wait({task, ready}, timeout=config.ready_timeout_seconds,
                           return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        ready.cancel()
        await bot.close()
        task.cancel()
        raise
    if ready.done():
        task.add_done_callback(_log_exit)
        return DiscordHandle(bot, task)
    ready.cancel()
    await bot.close()
    if task.done():
        exc = task.exception() if not task.cancelled() else None
        raise DiscordStartError(_explain(exc, config), transient=_transient(exc)) from exc
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise DiscordStartError(f"Discord did not become ready within {config.ready_timeout_seconds:.0f}s "
                            f"(gateway {config.gateway_url})", transient=True)
