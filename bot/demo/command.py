"""``superfan demo`` and ``superfan run --sandbox``.

The demo starts the real app (:func:`bot.app.run`: web app, LINE adapter, Discord bot, scheduler,
outbox senders) in sandbox mode (:mod:`bot.demo.sandbox`) on a temporary SQLite database, plays
a simulated community into it through the adapters (:mod:`bot.demo.drive`), lets simulated
staff answer most of the day's DMs, runs the hourly tier refresh once, sends one drop to the
true-fan tier and above, and shows the result; ``demo-report.html`` is the HTML report of that
database. Ctrl-C stops it cleanly: the app shuts down, the emulators close their ports and the
temporary folder is removed (nothing runs in another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import aiohttp
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn

from bot.app import Crm
from bot.config import Config
from bot.demo.community import Mix, simulate
from bot.demo.sandbox import Sandbox
from bot.demo.show import DropResult, Shown, finished, show, traffic_summary
from bot.demo.traffic import Traffic, plan_traffic
from bot.i18n import t

T = TypeVar("T")
#: The demo community: about this many accounts over this many days (~25,000 rows).
FANS, DAYS = 300, 60
#: DMs to the creator relative to the simulator's own rates, so that the last two days hold a
#: realistic inbox (a dozen or so waiting) at this size.
DM_RATE = 8.0
#: Share of accounts that are true fans gone quiet two to six weeks ago (the digest's care list).
QUIET_SHARE = 0.01
#: Lines per digest list on the demo's screen (the whole community's history arrived today, so
#: every tier change is today's); the counts stay whole and the rest is "… and N more".
DIGEST_LINES = 10
#: Share of the day's waiting conversations the simulated staff answer.
ANSWERED_SHARE = 0.7
STEPS = ("start", "line", "purchases", "discord", "inbox", "tiers", "drop", "report")


class Interrupted(Exception):
    """The app stopped before the demo had finished (Ctrl-C, or SIGTERM)."""


@dataclass(frozen=True)
class DemoResult:
    """What a demo run leaves behind, for the command and the tests."""

    html: Path
    traffic: Traffic
    shown: Shown
    seconds: float


def community_mix(fans: int) -> Mix:
    """The simulator's default mix of archetypes scaled to about ``fans`` accounts."""
    base = Mix()
    total = sum(base.counts().values())

    def scale(count: int) -> int:
        return max(1, round(count * fans / total)) if count else 0

    return Mix(true_fans=scale(base.true_fans), casual=scale(base.casual), lurkers=scale(base.lurkers),
               spammers=scale(base.spammers), one_time_buyers=scale(base.one_time_buyers),
               occasional_buyers=scale(base.occasional_buyers), event_goers=scale(base.event_goers),
               lapsed_true_fans=scale(base.lapsed_true_fans), heavy_chatters=scale(base.heavy_chatters),
               quiet_true_fans=max(1, round(fans * QUIET_SHARE)), dm_rate=DM_RATE)


def demo_command(
    fans: Annotated[int, typer.Option("--fans", min=10, max=5000, help="About how many fan accounts.")] = FANS,
    days: Annotated[int, typer.Option("--days", min=3, max=365, help="Days of history to simulate.")] = DAYS,
    seed: Annotated[int, typer.Option("--seed", help="Another seed, another community.")] = 1,
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the HTML report.")] = Path("demo-report.html"),
) -> None:
    """A simulated community through the real app against local LINE and Discord stand-ins: no tokens needed."""
    from bot.cli_support import command

    command(_demo)(fans, days, seed, out_path)


async def _demo(fans: int, days: int, seed: int, out_path: Path) -> None:
    from bot.cli import out
    from bot.cli_support import current_config

    config = current_config()
    locale = config.creator.locale
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    with held_logs(hold=not verbose) as held:
        try:
            await run_demo(config, out, fans=fans, days=days, seed=seed, out_path=out_path)
        except Interrupted:
            out.print(t("demo.interrupted", locale), highlight=False)
            raise typer.Exit(130) from None
        finally:
            if held:
                out.print(t("demo.logged", locale, count=len(held)), highlight=False, style="dim")
                for record in held:
                    out.print(f"  {record.levelname} {record.name}: {record.getMessage().splitlines()[0][:200]}",
                              highlight=False, markup=False, style="dim")


@contextlib.contextmanager
def held_logs(*, hold: bool = True, level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """Keep the app's log lines off the screen while the demo draws on it; the caller lists them
    after (one line each: ``--verbose`` shows them as they come, tracebacks included)."""
    held: list[logging.LogRecord] = []

    class Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.levelno >= level and not record.name.startswith("discord.client"):  # voice support: unused
                held.append(record)
            return False

    handlers = list(logging.getLogger().handlers) if hold else []
    keep = Hold()
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield held
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


async def run_demo(config: Config, console: Console, *, fans: int = FANS, days: int = DAYS, seed: int = 1,
                   out_path: Path = Path("demo-report.html"), database: Path | None = None) -> DemoResult:
    """The whole demo; raises :class:`Interrupted` when the app is stopped before it finishes.

    The database is a temporary file removed at the end, unless ``database`` names one to keep.
    """
    from bot.demo.sandbox import open_sandbox
    from crm.clock import utcnow

    started = time.monotonic()
    locale = config.creator.locale
    end = utcnow()
    community = simulate(seed=seed, days=days, mix=community_mix(fans), end=end, tz=config.creator.timezone)
    traffic = plan_traffic(community.rows, end=end, checkin_keyword=next(iter(config.checkin.keywords), None))
    traffic_summary(console, traffic, locale, fans=len(community.truth), days=days)
    with tempfile.TemporaryDirectory(prefix="superfan-demo-") as tmp:
        database_url = f"sqlite+aiosqlite:///{database or Path(tmp) / 'demo.db'}"
        async with open_sandbox(config, database_url=database_url) as box:
            for user_id, name in traffic.discord_names.items():
                box.discord.add_member(box.world.guild_id, user_id, name)
            with _progress(console, locale) as bar:
                steps = _Steps(bar, locale)
                drop = await _with_app(box, steps, lambda crm, web, http: _play(box, crm, web, http, traffic, steps))
                steps.update("report", 0, 1)
                shown, html = await _gather(box.config, drop, out_path)
                steps.update("report", 1, 1)
    show(console, shown, locale, box.config.crm_settings().tiers)
    seconds = time.monotonic() - started
    finished(console, locale, html=str(html), seconds=seconds)
    return DemoResult(html, traffic, shown, seconds)


async def _with_app(box: Sandbox, steps: _Steps, work: Callable[[Crm, str, aiohttp.ClientSession], Awaitable[T]]) -> T:
    """Run the real app in the sandbox while ``work(crm, web_url, http)`` runs; stop it afterwards.

    The app handles SIGINT/SIGTERM itself (it shuts down cleanly); when it stops before ``work``
    is done, ``work`` is cancelled and :class:`Interrupted` raised.
    """
    from bot.app import open_crm, run

    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps.update("start", 0, 1)
    app = asyncio.create_task(run(box.config, stop=stop, on_ready=ready.set_result), name="superfan-demo-app")
    try:
        where = await _unless_stopped(ready, app, stop)
        steps.update("start", 1, 1)
        async with open_crm(box.config) as crm, aiohttp.ClientSession() as http:
            return await _unless_stopped(work(crm, where.split(" ")[0], http), app, stop)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(app, 30)


async def _unless_stopped(step: Awaitable[T], app: asyncio.Task[None], stop: asyncio.Event) -> T:
    """``step``'s result, unless the app is stopping first (its signal handler sets ``stop``): then
    ``step`` is cancelled (whatever it was waiting for is going away) and :class:`Interrupted` raised."""
    task = asyncio.ensure_future(step)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, app, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done() and not stop.is_set():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    if app.done() and not app.cancelled() and app.exception() is not None:
        raise app.exception()  # type: ignore[misc]
    raise Interrupted()


async def _play(box: Sandbox, crm: Crm, web: str, http: aiohttp.ClientSession, traffic: Traffic,
                steps: _Steps) -> DropResult:
    """The community's traffic, the staff at the inbox, the hourly tier refresh, and the drop."""
    from bot.demo.drive import Driver

    driver = Driver(box, web, crm, http, steps.update)
    await asyncio.gather(driver.line(traffic), driver.purchases(traffic), driver.discord_messages(traffic))
    await driver.discord_recent(traffic)
    locale = box.config.creator.locale
    await driver.answer_inbox([t(f"demo.staff_answer_{n}", locale) for n in (1, 2, 3)], share=ANSWERED_SHARE)
    steps.update("tiers", 0, 1)
    from bot.jobs import refresh_tiers_job

    await refresh_tiers_job(crm)
    steps.update("tiers", 1, 1)
    steps.update("drop", 0, 1)
    return await driver.send_drop(t("demo.drop_text", locale))


async def _gather(config: Config, drop: DropResult | None, out_path: Path) -> tuple[Shown, Path]:
    """Read what the demo shows from the stopped app's database, and write the HTML report."""
    from bot.app import open_crm
    from bot.report import write_report
    from crm.clock import utcnow
    from crm.digest import build_digest
    from crm.identity import find_fan
    from crm.profiles import fan_documents
    from crm.stats import community_stats

    now = utcnow()
    async with open_crm(config) as crm:
        async with crm.read() as session:
            stats = await community_stats(session, crm.settings, now, top=10)
            top_fan: dict[str, Any] | None = None
            if stats["top"]:
                found = await find_fan(session, str(stats["top"][0]["id"]))
                (top_fan,) = await fan_documents(session, [found], crm.settings, now, interactions=8)
            screen = replace(crm.settings, digest=replace(crm.settings.digest, list_limit=DIGEST_LINES))
            digest = (await build_digest(session, screen, now)).as_json()
        html = await write_report(crm, out_path, now=now, locale=config.creator.locale)
    return Shown(stats, top_fan, digest, drop), html.resolve()


class _Steps:
    """The progress display: one line per step, created when the step starts."""

    def __init__(self, bar: Progress, locale: str) -> None:
        self.bar = bar
        self.locale = locale
        self.tasks: dict[str, TaskID] = {}

    def update(self, step: str, done: int, total: int) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.bar.add_task(t(f"demo.step.{step}", self.locale), total=total or 1)
            if self.bar.disable:  # not a terminal (a log, a pipe): one line per step instead of bars
                self.bar.console.print(f"… {t(f'demo.step.{step}', self.locale)}", highlight=False)
        self.bar.update(self.tasks[step], completed=done if total else 1, total=total or 1)


def _progress(console: Console, locale: str) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    console=console, transient=False, disable=not console.is_terminal)
