"""The LINE emulator, driven through the real line-bot-sdk so its answers are ones the SDK accepts."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from linebot.v3.messaging import (
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    MulticastRequest,
    PushMessageRequest,
    ReplyMessageRequest,
    TextMessage,
)
from linebot.v3.messaging.exceptions import ApiException
from pydantic.v1 import ValidationError

from bot.sandbox.line_emulator import LineEmulator

FAN = "U" + "a" * 28 + "1234"


class FakeClock:
    """Monotonic stand-in so token expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def emu() -> AsyncIterator[LineEmulator]:
    async with LineEmulator() as emulator:
        yield emulator


def conf(emu: LineEmulator, token: str | None = None) -> Configuration:
    return Configuration(host=emu.base_url, access_token=token or emu.access_token)


def push(to: str = FAN, text: str = "new drop!") -> PushMessageRequest:
    return PushMessageRequest(to=to, messages=[TextMessage(text=text)])


def error_body(exc: ApiException) -> dict:
    assert isinstance(exc.body, str)
    return json.loads(exc.body)


async def test_push_is_delivered_and_recorded(emu: LineEmulator) -> None:
    async with AsyncApiClient(conf(emu)) as client:
        resp = await AsyncMessagingApi(client).push_message_with_http_info(push())

    assert resp.status_code == 200
    assert len(resp.data.sent_messages) == 1
    assert resp.data.sent_messages[0].id and resp.data.sent_messages[0].quote_token
    request_id = resp.headers["x-line-request-id"]
    [delivered] = emu.delivered
    assert (delivered.via, delivered.to, delivered.retry_key) == ("push", FAN, None)
    assert delivered.messages == [{"type": "text", "text": "new drop!"}]
    assert delivered.request_id == request_id
    [call] = emu.calls
    assert (call.method, call.path, call.status) == ("POST", "/v2/bot/message/push", 200)
    assert call.headers["authorization"] == "Bearer test-access-token"
    assert call.json["to"] == FAN
    assert emu.total_usage == 1


async def test_reply_token_is_single_use_and_free(emu: LineEmulator) -> None:
    token = emu.issue_reply_token(FAN)
    request = ReplyMessageRequest(reply_token=token, messages=[TextMessage(text="thanks!")])
    async with AsyncApiClient(conf(emu)) as client:
        api = AsyncMessagingApi(client)
        resp = await api.reply_message(request)
        assert len(resp.sent_messages) == 1
        with pytest.raises(ApiException) as err:
            await api.reply_message(request)

    assert err.value.status == 400
    assert error_body(err.value) == {"message": "Invalid reply token"}
    assert [(d.via, d.to) for d in emu.delivered] == [("reply", FAN)]
    assert emu.total_usage == 0


async def test_unknown_and_expired_reply_tokens_are_rejected() -> None:
    clock = FakeClock()
    async with LineEmulator(clock=clock, reply_token_ttl=30.0) as emu:
        token = emu.issue_reply_token(FAN)
        clock.now += 30.0
        async with AsyncApiClient(conf(emu)) as client:
            api = AsyncMessagingApi(client)
            for reply_token in (token, "never-issued"):
                with pytest.raises(ApiException) as err:
                    await api.reply_message(
                        ReplyMessageRequest(reply_token=reply_token, messages=[TextMessage(text="late")])
                    )
                assert err.value.status == 400
        assert emu.delivered == []


async def test_repeated_retry_key_is_409_and_delivers_once(emu: LineEmulator) -> None:
    key = str(uuid.uuid4())
    async with AsyncApiClient(conf(emu)) as client:
        api = AsyncMessagingApi(client)
        first = await api.push_message_with_http_info(push(), x_line_retry_key=key)
        with pytest.raises(ApiException) as err:
            await api.push_message(push(), x_line_retry_key=key)

    assert err.value.status == 409
    assert err.value.headers["x-line-accepted-request-id"] == first.headers["x-line-request-id"]
    body = error_body(err.value)
    assert body["sentMessages"][0]["id"] == first.data.sent_messages[0].id
    assert len(emu.delivered_to(FAN)) == 1
    assert emu.calls[0].headers["x-line-retry-key"] == key
    assert emu.total_usage == 1


async def test_multicast_retry_key_and_failed_attempts_do_not_burn_the_key(emu: LineEmulator) -> None:
    key = str(uuid.uuid4())
    fans = [f"U{i:032d}" for i in range(3)]
    request = MulticastRequest(to=fans, messages=[TextMessage(text="live now")])
    emu.fail_next(500, path_contains="multicast")
    async with AsyncApiClient(conf(emu)) as client:
        api = AsyncMessagingApi(client)
        with pytest.raises(ApiException) as err:
            await api.multicast(request, x_line_retry_key=key)
        assert err.value.status == 500
        assert await api.multicast(request, x_line_retry_key=key) == {}
        with pytest.raises(ApiException) as err:
            await api.multicast(request, x_line_retry_key=key)
        assert err.value.status == 409

    assert sorted(d.to for d in emu.delivered) == fans
    assert {d.retry_key for d in emu.delivered} == {key}


async def test_retry_key_must_be_a_uuid(emu: LineEmulator) -> None:
    async with AsyncApiClient(conf(emu)) as client:
        with pytest.raises(ApiException) as err:
            await AsyncMessagingApi(client).push_message(push(), x_line_retry_key="not-a-uuid")
    assert err.value.status == 400
    assert emu.delivered == []


async def test_multicast_over_500_is_400(emu: LineEmulator) -> None:
    fans = [f"U{i:032d}" for i in range(501)]
    with pytest.raises(ValidationError):
        MulticastRequest(to=fans, messages=[TextMessage(text="x")])
    request = MulticastRequest(to=fans[:500], messages=[TextMessage(text="x")])
    request.to.append(fans[500])

    async with AsyncApiClient(conf(emu)) as client:
        with pytest.raises(ApiException) as err:
            await AsyncMessagingApi(client).multicast(request)

    assert err.value.status == 400
    assert error_body(err.value)["details"] == [
        {"message": "Size must be between 1 and 500", "property": "to"}
    ]
    assert emu.delivered == []


async def test_empty_text_is_400_with_details(emu: LineEmulator) -> None:
    async with AsyncApiClient(conf(emu)) as client:
        with pytest.raises(ApiException) as err:
            await AsyncMessagingApi(client).push_message(push(text=""))
    assert err.value.status == 400
    assert error_body(err.value)["details"][0]["property"] == "messages[0].text"


async def test_quota_exceeded_is_429_and_nothing_delivered() -> None:
    fans = ["Ua", "Ub"]
    two_messages = [TextMessage(text="one"), TextMessage(text="two")]
    async with LineEmulator(monthly_quota=3) as emu, AsyncApiClient(conf(emu)) as client:
        api = AsyncMessagingApi(client)
        await api.multicast(MulticastRequest(to=fans, messages=two_messages))
        with pytest.raises(ApiException) as err:
            await api.multicast(MulticastRequest(to=fans, messages=two_messages))
        assert err.value.status == 429
        assert error_body(err.value) == {"message": "You have reached your monthly limit."}
        await api.push_message(push())
        with pytest.raises(ApiException):
            await api.push_message(push())
        await api.reply_message(
            ReplyMessageRequest(reply_token=emu.issue_reply_token(FAN), messages=two_messages)
        )

        quota = await api.get_message_quota()
        consumption = await api.get_message_quota_consumption()

    assert (quota.type.value, quota.value) == ("limited", 3)
    assert consumption.total_usage == 3
    assert sorted(d.to for d in emu.delivered if d.via != "reply") == sorted([*fans, FAN])


async def test_unlimited_quota_reports_none(emu: LineEmulator) -> None:
    async with AsyncApiClient(conf(emu)) as client:
        quota = await AsyncMessagingApi(client).get_message_quota()
    assert quota.type.value == "none" and quota.value is None


async def test_fail_next_then_success(emu: LineEmulator) -> None:
    emu.fail_next(500)
    emu.fail_next(429, times=2, retry_after=7, path_contains="/push")
    async with AsyncApiClient(conf(emu)) as client:
        api = AsyncMessagingApi(client)
        statuses: list[int] = []
        retry_after: list[str | None] = []
        for _ in range(3):
            with pytest.raises(ApiException) as err:
                await api.push_message(push())
            statuses.append(err.value.status)
            retry_after.append(err.value.headers.get("Retry-After"))
        assert emu.delivered == []
        await api.push_message(push())

    assert statuses == [500, 429, 429]
    assert retry_after == [None, "7", "7"]
    assert [c.status for c in emu.calls] == [500, 429, 429, 200]
    assert len(emu.delivered) == 1


async def test_random_faults_hit_about_their_share_of_matching_requests_and_deliver_nothing(
        emu: LineEmulator) -> None:
    emu.fail_randomly(429, 0.3, path_contains="/push", retry_after=1, seed=7)
    async with AsyncApiClient(conf(emu)) as client:
        api = AsyncMessagingApi(client)
        refused = 0
        for _ in range(100):
            try:
                await api.push_message(push())
            except ApiException as err:
                assert (err.status, err.headers.get("Retry-After")) == (429, "1")
                refused += 1
        await api.get_message_quota()  # another path: never refused
    assert 15 <= refused <= 45  # a seeded draw, so the same count every run
    assert len(emu.delivered) == 100 - refused
    assert emu.calls[-1].status == 200
    emu.reset(full=True)
    async with AsyncApiClient(conf(emu)) as client:
        await AsyncMessagingApi(client).push_message(push())
    assert [c.status for c in emu.calls] == [200]


async def test_fault_only_hits_matching_paths(emu: LineEmulator) -> None:
    emu.fail_next(503, path_contains="multicast")
    async with AsyncApiClient(conf(emu)) as client:
        await AsyncMessagingApi(client).push_message(push())
    assert len(emu.delivered) == 1


async def test_bad_token_is_401(emu: LineEmulator) -> None:
    async with AsyncApiClient(conf(emu, token="wrong")) as client:
        with pytest.raises(ApiException) as err:
            await AsyncMessagingApi(client).push_message(push())
    assert err.value.status == 401
    assert error_body(err.value)["message"].startswith("Authentication failed")
    assert emu.delivered == []


async def test_get_profile(emu: LineEmulator) -> None:
    emu.add_profile("Ustar", "Star Fan", picture_url="https://example.invalid/p.png", language="ja")
    async with AsyncApiClient(conf(emu)) as client:
        api = AsyncMessagingApi(client)
        star = await api.get_profile("Ustar")
        auto = await api.get_profile(FAN)
        emu.auto_profiles = False
        with pytest.raises(ApiException) as err:
            await api.get_profile("Unobody")

    assert (star.display_name, star.language, star.picture_url) == (
        "Star Fan",
        "ja",
        "https://example.invalid/p.png",
    )
    assert (auto.display_name, auto.user_id) == ("User 1234", FAN)
    assert err.value.status == 404
    assert emu.profile_requests == 3


async def test_delay_times_out_the_client_but_the_message_still_lands(emu: LineEmulator) -> None:
    emu.delay = 5.0
    async with AsyncApiClient(conf(emu)) as client:
        with pytest.raises(TimeoutError):
            await AsyncMessagingApi(client).push_message(push(), _request_timeout=0.2)
    assert len(emu.delivered) == 1


async def test_reset_and_restartable_lifecycle() -> None:
    emu = LineEmulator()
    with pytest.raises(RuntimeError):
        _ = emu.base_url
    await emu.start()
    try:
        async with AsyncApiClient(conf(emu)) as client:
            await AsyncMessagingApi(client).push_message(push())
        emu.reset()
        assert emu.calls == [] and emu.delivered == [] and emu.total_usage == 1
        emu.reset(full=True)
        assert emu.total_usage == 0
    finally:
        await emu.stop()
        await emu.stop()
