"""``superfan line richmenu``: the menu under the chat, installed against the emulator, and its buttons."""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.line_adapter.richmenu import data_api_base, inspect_image
from bot.sandbox.line_emulator import LineEmulator, RichMenu
from crm.errors import BadInput
from tests.line_adapter.conftest import LineRig, postback_event, text_event, user


def png(width: int, height: int) -> bytes:
    """A real (black and white) PNG of that size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def jpeg_header(width: int, height: int) -> bytes:
    """The start of a baseline JPEG: SOI, an APP0 segment, then the frame header with the size."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emu: LineEmulator):
    monkeypatch.delenv("SUPERFAN_CONFIG", raising=False)
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", emu.access_token)
    cfg = tmp_path / "superfan.toml"
    cfg.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "cli.db"}"\n'
                   f'[line]\napi_base = "{emu.base_url}"\n', encoding="utf-8")

    async def run(*args: str, expect: int = 0):
        # The command runs its own event loop; the emulator keeps answering on this one.
        result = await asyncio.to_thread(CliRunner().invoke, app, ["--config", str(cfg), *args])
        assert result.exit_code == expect, (result.stdout, result.stderr)
        return result

    return run


async def test_richmenu_installs_three_buttons_as_every_fans_default(cli, emu: LineEmulator, tmp_path: Path):
    image = tmp_path / "menu.png"
    image.write_bytes(png(2500, 843))
    out = (await cli("line", "richmenu", str(image))).stdout
    [(menu_id, menu)] = emu.rich_menus.items()
    assert menu_id in out and "2500×843" in out
    assert emu.default_rich_menu == menu_id
    assert menu.content_type == "image/png" and menu.image == image.read_bytes()
    body = menu.body
    assert body["size"] == {"width": 2500, "height": 843} and body["chatBarText"] == "選單" and body["selected"]
    areas = body["areas"]
    assert [a["action"]["data"] for a in areas] == ["action=checkin", "action=me", "action=link"]
    assert [a["action"]["displayText"] for a in areas] == ["打卡", "我的資料", "綁定 Discord"]
    assert [a["bounds"]["x"] for a in areas] == [0, 833, 1666]
    assert sum(a["bounds"]["width"] for a in areas) == 2500 and {a["bounds"]["height"] for a in areas} == {843}

    # A menu the creator made in LINE's console stays; running again replaces superfan's own.
    console = {**body, "name": "made in the console"}
    emu.rich_menus["richmenu-console"] = RichMenu(console, b"img", "image/png")
    image.write_bytes(png(1200, 405))
    await cli("line", "richmenu", str(image))
    new_id = emu.default_rich_menu
    assert new_id != menu_id and set(emu.rich_menus) == {new_id, "richmenu-console"}
    assert emu.rich_menus[new_id].body["size"] == {"width": 1200, "height": 405}


@pytest.mark.parametrize(("picture", "says"), [
    (png(500, 500), "寬 800–2500 像素"),
    (png(2500, 2000), "寬高比至少 1.45"),
    (b"GIF89a" + b"\x00" * 100, "必須是 PNG 或 JPEG"),
    (png(2500, 843) + b"\x00" * (1024 * 1024), "最多只收 1 MB"),
])
async def test_a_picture_line_would_refuse_is_refused_before_anything_is_created(cli, emu: LineEmulator,
                                                                                 tmp_path: Path, picture, says):
    image = tmp_path / "menu.img"
    image.write_bytes(picture)
    result = await cli("line", "richmenu", str(image), expect=2)
    assert says in result.stderr
    assert emu.rich_menus == {} and emu.calls == []


async def test_a_refused_upload_leaves_no_half_made_menu(cli, emu: LineEmulator, tmp_path: Path):
    image = tmp_path / "menu.png"
    image.write_bytes(png(2500, 843))
    emu.fail_next(400, path_contains="/content")
    result = await cli("line", "richmenu", str(image), expect=2)
    assert "LINE 拒絕了圖文選單（HTTP 400）" in result.stderr
    assert emu.rich_menus == {} and emu.default_rich_menu is None


async def test_a_refused_token_or_default_is_reported_and_leaves_nothing(cli, emu: LineEmulator, tmp_path: Path):
    image = tmp_path / "menu.png"
    image.write_bytes(png(2500, 843))
    emu.fail_next(401, path_contains="/v2/bot/richmenu")
    assert "HTTP 401" in (await cli("line", "richmenu", str(image), expect=2)).stderr
    emu.fail_next(500, path_contains="/user/all/richmenu")
    assert "HTTP 500" in (await cli("line", "richmenu", str(image), expect=2)).stderr
    assert emu.rich_menus == {} and emu.default_rich_menu is None


def test_jpeg_sizes_are_read_from_the_frame_header_and_images_go_to_the_data_host():
    found = inspect_image(jpeg_header(1200, 405))
    assert (found.content_type, found.width, found.height) == ("image/jpeg", 1200, 405)
    with pytest.raises(BadInput):
        inspect_image(b"\xff\xd8\xff\xe0\x00\x10JFIF")  # no frame header
    assert data_api_base("https://api.line.me/") == "https://api-data.line.me"
    assert data_api_base("http://127.0.0.1:8123") == "http://127.0.0.1:8123"


async def test_the_menu_buttons_answer_in_the_chat(rig: LineRig):
    fan = user(7)
    await rig.post(text_event(fan, "嗨"))  # a fan who has talked to the account before
    await rig.post(postback_event(fan, "action=me", reply_token=rig.emu.issue_reply_token(fan)))
    await rig.post(postback_event(fan, "action=link", reply_token=rig.emu.issue_reply_token(fan)))
    await rig.post(postback_event(fan, "action=checkin", reply_token=rig.emu.issue_reply_token(fan)))
    me, link, checkin = rig.replies_to(fan)[-3:]
    assert me.startswith("我們記得的你") and "最近互動" in me
    assert "在 Discord 輸入 /link 取得綁定碼" in link
    assert checkin.startswith("打卡成功")
