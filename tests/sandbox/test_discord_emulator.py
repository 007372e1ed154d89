"""The Discord emulator, driven by the unmodified discord.py client so its payloads are ones it accepts."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.discord_adapter.endpoints import DEFAULT_API_BASE, DEFAULT_GATEWAY_URL, configure_endpoints
from bot.sandbox.discord_emulator import DiscordEmulator

GUILD = 700_000_000_000_000_001
GENERAL = 700_000_000_000_000_101
FORUM = 700_000_000_000_000_102
FAN_ROLE = 700_000_000_000_000_201
MOD_ROLE = 700_000_000_000_000_202
OWNER = 700_000_000_000_000_301
FAN = 700_000_000_000_000_302
MOD = 700_000_000_000_000_303
OUTSIDER = 700_000_000_000_000_304
STEP = 5.0


def intents() -> discord.Intents:
    value = discord.Intents.default()
    value.members = True
    value.message_content = True
    return value


@pytest.fixture
async def emu() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator() as emulator:
        emulator.add_guild(GUILD, "Fan Club", owner_id=OWNER)
        emulator.add_channel(GUILD, GENERAL, "general")
        emulator.add_channel(GUILD, FORUM, "fan-art", type=15)
        emulator.add_role(GUILD, FAN_ROLE, "Fan")
        emulator.add_role(GUILD, MOD_ROLE, "Mod", permissions=discord.Permissions(manage_guild=True).value)
        emulator.add_member(GUILD, OWNER, "owner")
        emulator.add_member(GUILD, FAN, "fan", roles=[FAN_ROLE])
        emulator.add_member(GUILD, MOD, "mod", roles=[MOD_ROLE])
        emulator.add_user(OUTSIDER, "outsider")
        emulator.add_invite(GUILD, "fanclub", OWNER, uses=3)
        yield emulator


@contextlib.asynccontextmanager
async def running(emu: DiscordEmulator, client: discord.Client) -> AsyncIterator[discord.Client]:
    """login + connect + wait_until_ready, and always close and restore Discord's endpoints."""
    configure_endpoints(emu.api_base, emu.gateway_url)
    task: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(client.login("fake-token"), STEP)
        task = asyncio.create_task(client.connect(reconnect=False))
        ready = asyncio.create_task(client.wait_until_ready())
        await asyncio.wait({task, ready}, timeout=STEP, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert ready.done(), "client did not become ready"
        yield client
    finally:
        await asyncio.wait_for(client.close(), STEP)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, STEP)
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)


def make_client() -> discord.Client:
    return discord.Client(intents=intents(), guild_ready_timeout=0.05)


def make_bot() -> commands.Bot:
    return commands.Bot(command_prefix="!", intents=intents(), guild_ready_timeout=0.05)


async def test_ready_caches_guild_with_members_roles_and_owner(emu: DiscordEmulator) -> None:
    async with running(emu, make_client()) as client:
        guild = client.get_guild(GUILD)
        assert guild is not None and guild.chunked
        assert guild.owner_id == OWNER
        fan = guild.get_member(FAN)
        assert fan is not None and [r.id for r in fan.roles] == [GUILD, FAN_ROLE]
        assert guild.get_member(MOD).guild_permissions.manage_guild
        assert guild.get_member(OWNER).guild_permissions.manage_guild
        assert not fan.guild_permissions.manage_guild
        assert isinstance(guild.get_channel(FORUM), discord.ForumChannel)
        assert client.user.id == emu.bot_user_id and client.application_id == emu.application_id
        assert client.latency < 1  # the HEARTBEAT sent right after HELLO was ACKed
        invites = await asyncio.wait_for(guild.invites(), STEP)
        assert [(i.code, i.uses, i.inviter.id) for i in invites] == [("fanclub", 3, OWNER)]
    assert emu.identify_payloads[0]["intents"] == intents().value
    assert emu.connect_queries[0] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    assert emu.unknown_requests == []


async def test_on_message_receives_message_create(emu: DiscordEmulator) -> None:
    client = make_client()
    received: asyncio.Future[discord.Message] = asyncio.get_running_loop().create_future()

    @client.event
    async def on_message(message: discord.Message) -> None:
        if not received.done():
            received.set_result(message)

    async with running(emu, client):
        sent = await emu.message_create(GENERAL, FAN, "我愛你們 #1")
        message = await asyncio.wait_for(received, STEP)
        assert message.content == "我愛你們 #1" and message.id == int(sent["id"])
        assert isinstance(message.author, discord.Member) and message.author.id == FAN
        assert message.guild is not None and message.guild.id == GUILD


async def test_slash_command_ephemeral_reply_is_captured(emu: DiscordEmulator) -> None:
    bot = make_bot()

    @bot.tree.command(name="hello", description="say hi", guild=discord.Object(GUILD))
    async def hello(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("hi", ephemeral=True)

    async with running(emu, bot):
        synced = await asyncio.wait_for(bot.tree.sync(guild=discord.Object(GUILD)), STEP)
        assert [c.name for c in synced] == ["hello"]
        handle = await emu.invoke_slash("hello", user_id=FAN, channel_id=GENERAL)
        assert handle.payload["data"]["id"] == emu.registered_commands(GUILD)[0]["id"]
        response = await handle.response(timeout=STEP)
        assert response["type"] == 4
        assert response["data"]["content"] == "hi" and response["data"]["flags"] == 64
        assert handle.responded_after is not None and handle.responded_after < 3


async def test_deferred_response_then_followup(emu: DiscordEmulator) -> None:
    bot = make_bot()

    @bot.tree.command(name="stats", description="slow", guild=discord.Object(GUILD))
    async def stats(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        await asyncio.sleep(0.01)
        await interaction.followup.send("42 fans", ephemeral=True)

    async with running(emu, bot):
        await asyncio.wait_for(bot.tree.sync(guild=discord.Object(GUILD)), STEP)
        handle = await emu.invoke_slash("stats", user_id=FAN, channel_id=GENERAL)
        assert (await handle.response(timeout=STEP))["type"] == 5
        followups = await handle.wait_followups(1, timeout=STEP)
        assert followups[0]["content"] == "42 fans" and followups[0]["flags"] == 64


async def test_slash_options_resolve_members_and_permission_checks(emu: DiscordEmulator) -> None:
    bot = make_bot()
    seen: list[tuple[int, int]] = []

    @bot.tree.command(name="points", description="give", guild=discord.Object(GUILD))
    @app_commands.checks.has_permissions(manage_guild=True)
    async def points(interaction: discord.Interaction, fan: discord.Member, amount: int) -> None:
        seen.append((fan.id, amount))
        await interaction.response.send_message(f"{fan.display_name} +{amount}")

    @points.error
    async def points_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await interaction.response.send_message("no permission", ephemeral=True)

    async with running(emu, bot):
        await asyncio.wait_for(bot.tree.sync(guild=discord.Object(GUILD)), STEP)
        for user_id in (OWNER, MOD):
            handle = await emu.invoke_slash(
                "points", user_id=user_id, channel_id=GENERAL, options={"fan": FAN, "amount": 5}
            )
            assert (await handle.response(timeout=STEP))["data"]["content"] == "fan +5"
        denied = await emu.invoke_slash(
            "points", user_id=FAN, channel_id=GENERAL, options={"fan": FAN, "amount": 1}
        )
        assert (await denied.response(timeout=STEP))["data"]["content"] == "no permission"
    assert seen == [(FAN, 5), (FAN, 5)]


async def test_subcommand_group_typed_options_and_dm_invocation(emu: DiscordEmulator) -> None:
    bot = make_bot()
    fan_group = app_commands.Group(name="fan", description="fans", guild_ids=[GUILD])
    points = app_commands.Group(name="points", description="points", parent=fan_group)
    given: list[tuple[int, int, int]] = []

    @points.command(name="give", description="give points")
    async def give(
        interaction: discord.Interaction, who: discord.User, amount: int, role: discord.Role
    ) -> None:
        given.append((who.id, amount, role.id))
        await interaction.response.send_message("ok")

    @bot.tree.command(name="ping", description="works in DMs")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"pong guild={interaction.guild_id}")

    bot.tree.add_command(fan_group)
    async with running(emu, bot):
        await asyncio.wait_for(bot.tree.sync(guild=discord.Object(GUILD)), STEP)
        await asyncio.wait_for(bot.tree.sync(), STEP)
        options = {"who": MOD, "amount": 3, "role": FAN_ROLE}
        handle = await emu.invoke_slash(
            "fan", subcommand="points give", user_id=FAN, channel_id=GENERAL, options=options
        )
        assert (await handle.response(timeout=STEP))["data"]["content"] == "ok"
        dm = await emu.invoke_slash("ping", user_id=FAN, channel_id=emu.dm_channel_id(FAN))
        assert (await dm.response(timeout=STEP))["data"]["content"] == "pong guild=None"
    assert given == [(MOD, 3, FAN_ROLE)]


async def test_interaction_deadline_rejects_late_callbacks() -> None:
    async with DiscordEmulator(interaction_deadline=0.05) as emu:
        emu.add_guild(GUILD)
        emu.add_channel(GUILD, GENERAL)
        emu.add_member(GUILD, FAN, "fan")
        bot = make_bot()
        codes: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        @bot.tree.command(name="slow", description="too slow", guild=discord.Object(GUILD))
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.1)
            try:
                await interaction.response.send_message("late")
            except discord.NotFound as exc:
                codes.set_result(exc.code)

        async with running(emu, bot):
            await asyncio.wait_for(bot.tree.sync(guild=discord.Object(GUILD)), STEP)
            handle = await emu.invoke_slash("slow", user_id=FAN, channel_id=GENERAL)
            assert await asyncio.wait_for(codes, STEP) == 10062  # Unknown interaction
            assert handle.callback is None


async def test_user_context_menu_receives_target_member(emu: DiscordEmulator) -> None:
    bot = make_bot()
    targets: list[discord.Member | discord.User] = []

    @bot.tree.context_menu(name="Fan profile", guild=discord.Object(GUILD))
    async def profile(interaction: discord.Interaction, member: discord.Member) -> None:
        targets.append(member)
        await interaction.response.send_message(f"profile of {member.id}", ephemeral=True)

    async with running(emu, bot):
        await asyncio.wait_for(bot.tree.sync(guild=discord.Object(GUILD)), STEP)
        handle = await emu.invoke_user_context("Fan profile", FAN, user_id=MOD, channel_id=GENERAL)
        assert (await handle.response(timeout=STEP))["data"]["content"] == f"profile of {FAN}"
    assert isinstance(targets[0], discord.Member) and targets[0].id == FAN
    assert [r.id for r in targets[0].roles] == [GUILD, FAN_ROLE]


async def test_button_click_reaches_the_view(emu: DiscordEmulator) -> None:
    client = make_client()
    clicked: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Join(discord.ui.View):
        @discord.ui.button(label="Join", custom_id="join")
        async def join(self, interaction: discord.Interaction, button: discord.ui.Button[Join]) -> None:
            clicked.set_result(interaction.user.id)
            await interaction.response.edit_message(content="joined!", view=None)

    async with running(emu, client):
        message = await asyncio.wait_for(
            client.get_channel(GENERAL).send("Join the club?", view=Join()), STEP
        )
        handle = await emu.click_button("join", message.id, FAN)
        assert await asyncio.wait_for(clicked, STEP) == FAN
        assert (await handle.response(timeout=STEP))["type"] == 7
        assert emu.sent_messages(GENERAL)[0]["content"] == "joined!"


async def test_add_roles_changes_emulator_member_and_client_cache(emu: DiscordEmulator) -> None:
    client = make_client()
    updated = asyncio.Event()

    @client.event
    async def on_member_update(before: discord.Member, after: discord.Member) -> None:
        if after.id == FAN and after.get_role(MOD_ROLE):
            updated.set()

    async with running(emu, client):
        guild = client.get_guild(GUILD)
        fan = guild.get_member(FAN)
        await asyncio.wait_for(fan.add_roles(guild.get_role(MOD_ROLE), reason="top fan"), STEP)
        assert emu.member_roles(GUILD, FAN) == [FAN_ROLE, MOD_ROLE]
        await asyncio.wait_for(updated.wait(), STEP)
        await asyncio.wait_for(fan.remove_roles(guild.get_role(FAN_ROLE)), STEP)
        assert emu.member_roles(GUILD, FAN) == [MOD_ROLE]
    assert [r.method for r in emu.requests if "/roles/" in r.path] == ["PUT", "DELETE"]


async def test_member_join_via_invite_and_reactions(emu: DiscordEmulator) -> None:
    client = make_client()
    joined: asyncio.Future[discord.Member] = asyncio.get_running_loop().create_future()
    reacted: asyncio.Future[discord.RawReactionActionEvent] = asyncio.get_running_loop().create_future()

    @client.event
    async def on_member_join(member: discord.Member) -> None:
        joined.set_result(member)

    @client.event
    async def on_raw_reaction_add(payload: discord.RawReactionActionEvent) -> None:
        reacted.set_result(payload)

    async with running(emu, client):
        await emu.member_add(GUILD, OUTSIDER, "outsider", via_invite="fanclub")
        member = await asyncio.wait_for(joined, STEP)
        assert (
            member.id == OUTSIDER and client.get_guild(GUILD).member_count == 5
        )  # 3 members + bot + outsider
        invites = await asyncio.wait_for(client.get_guild(GUILD).invites(), STEP)
        assert invites[0].uses == 4
        sent = await emu.message_create(GENERAL, FAN, "vote!")
        await emu.reaction_add(GENERAL, int(sent["id"]), OUTSIDER, "🔥")
        payload = await asyncio.wait_for(reacted, STEP)
        assert (payload.user_id, str(payload.emoji), payload.member.id) == (OUTSIDER, "🔥", OUTSIDER)


async def test_dm_send_creates_channel_and_records_message(emu: DiscordEmulator) -> None:
    async with running(emu, make_client()) as client:
        user = await asyncio.wait_for(client.fetch_user(FAN), STEP)
        message = await asyncio.wait_for(user.send("thanks for the support!"), STEP)
        dm_id = emu.dm_channel_id(FAN)
        assert message.channel.id == dm_id
        assert [m["content"] for m in emu.sent_messages(dm_id)] == ["thanks for the support!"]
        emu.set_dms_closed(OUTSIDER)
        with pytest.raises(discord.Forbidden) as exc:
            outsider = await asyncio.wait_for(client.fetch_user(OUTSIDER), STEP)
            await asyncio.wait_for(outsider.send("hi"), STEP)
        assert exc.value.code == 50007


async def test_rest_faults_unknown_routes_and_threads(emu: DiscordEmulator) -> None:
    async with running(emu, make_client()) as client:
        channel = client.get_channel(GENERAL)
        emu.fail_next(
            "POST", f"/channels/{GENERAL}/messages", 429, json={"message": "slow", "retry_after": 0.01}
        )
        await asyncio.wait_for(channel.send("after a rate limit"), STEP)
        assert [r.path for r in emu.requests if r.method == "POST"][-2:] == [
            f"/channels/{GENERAL}/messages"
        ] * 2
        await asyncio.wait_for(
            channel.send("poster", file=discord.File(io.BytesIO(b"png"), "poster.png")), STEP
        )
        assert (
            emu.requests[-1].files
            and emu.sent_messages(GENERAL)[-1]["attachments"][0]["filename"] == "poster.png"
        )
        emu.fail_next("POST", "/messages", 403, json={"code": 50013, "message": "Missing Permissions"})
        with pytest.raises(discord.Forbidden):
            await asyncio.wait_for(channel.send("nope"), STEP)
        thread = await asyncio.wait_for(
            channel.create_thread(name="Q&A", type=discord.ChannelType.public_thread), STEP
        )
        assert thread.parent_id == GENERAL
        post = await asyncio.wait_for(
            client.get_channel(FORUM).create_thread(name="art", content="my drawing"), STEP
        )
        assert post.message.content == "my drawing"
        with pytest.raises(discord.NotFound):
            await asyncio.wait_for(client.http.request(discord.http.Route("GET", "/stickers/1")), STEP)
    assert [r.path for r in emu.unknown_requests] == ["/stickers/1"]


async def test_disallowed_intents_close_raises_privileged_intents_required(emu: DiscordEmulator) -> None:
    emu.fail_identify_with = 4014
    client = make_client()
    configure_endpoints(emu.api_base, emu.gateway_url)
    try:
        await asyncio.wait_for(client.login("fake-token"), STEP)
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(client.connect(reconnect=True), STEP)
    finally:
        await asyncio.wait_for(client.close(), STEP)
        configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
    assert len(emu.identify_payloads) == 1


async def test_force_reconnect_resumes_and_messages_keep_flowing(emu: DiscordEmulator) -> None:
    client = make_client()
    contents: asyncio.Queue[str] = asyncio.Queue()
    resumed = asyncio.Event()

    @client.event
    async def on_message(message: discord.Message) -> None:
        contents.put_nowait(message.content)

    @client.event
    async def on_resumed() -> None:
        resumed.set()

    async with running(emu, client):
        await emu.message_create(GENERAL, FAN, "before")
        assert await asyncio.wait_for(contents.get(), STEP) == "before"
        await emu.force_reconnect()
        await emu.wait_until_ready_sockets(1, timeout=STEP)
        await asyncio.wait_for(resumed.wait(), STEP)
        await emu.message_create(GENERAL, FAN, "after")
        assert await asyncio.wait_for(contents.get(), STEP) == "after"
    assert len(emu.identify_payloads) == 1 and len(emu.resume_payloads) == 1


def test_configure_endpoints_is_idempotent_and_restorable() -> None:
    configure_endpoints("http://127.0.0.1:1/api/v10/", "ws://127.0.0.1:1/gateway")
    configure_endpoints("http://127.0.0.1:1/api/v10/", "ws://127.0.0.1:1/gateway")
    assert discord.http.Route("GET", "/users/@me").url == "http://127.0.0.1:1/api/v10/users/@me"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:1/gateway"
    configure_endpoints(DEFAULT_API_BASE, DEFAULT_GATEWAY_URL)
    assert discord.http.Route("GET", "/users/@me").url == "https://discord.com/api/v10/users/@me"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"
