"""``superfan line richmenu``: the LINE menu under the chat with 打卡 / 我的資料 / 綁定 Discord buttons.

The creator designs the picture (Canva or any editor; three equal columns, left to right:
check in, my data, link Discord). superfan checks it against LINE's rules, lays three tap areas
over it that send postbacks the webhook already understands, uploads it, makes it every fan's
default menu and deletes the menus earlier runs made (menus made in LINE's console stay).
"""

from __future__ import annotations

import contextlib
import logging
import struct
from dataclasses import dataclass

import aiohttp
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    PostbackAction,
    RichMenuArea,
    RichMenuBounds,
    RichMenuRequest,
    RichMenuSize,
)

from bot.i18n import t
from crm.errors import BadInput

log = logging.getLogger(__name__)

#: What each column does, left to right: postback data (parsed by ``commands.parse_postback``).
BUTTONS = (("checkin", "action=checkin"), ("me", "action=me"), ("link", "action=link"))
MENU_NAME = "superfan"  # how our menus are told apart from any the creator made in LINE's console
MAX_IMAGE_BYTES = 1024 * 1024
#: LINE's documented limits for a rich menu image.
MIN_WIDTH, MAX_WIDTH, MIN_HEIGHT, MIN_ASPECT = 800, 2500, 250, 1.45
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class MenuImage:
    content_type: str
    width: int
    height: int


def inspect_image(data: bytes) -> MenuImage:
    """The image's type and size, or :class:`BadInput` saying which of LINE's rules it breaks."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        image = MenuImage("image/png", width, height)
    elif data[:2] == b"\xff\xd8":
        image = MenuImage("image/jpeg", *_jpeg_size(data))
    else:
        raise BadInput("the rich menu image must be a PNG or JPEG file", code="line.richmenu.format")
    if len(data) > MAX_IMAGE_BYTES:
        raise BadInput(f"the rich menu image is {len(data):,} bytes; LINE takes at most 1 MB",
                       code="line.richmenu.too_big", size=len(data))
    if not (MIN_WIDTH <= image.width <= MAX_WIDTH and image.height >= MIN_HEIGHT
            and image.width / image.height >= MIN_ASPECT):
        raise BadInput(f"the rich menu image is {image.width}×{image.height}; LINE needs a width of 800–2500 "
                       "pixels, a height of at least 250 and width/height of at least 1.45 (e.g. 2500×843)",
                       code="line.richmenu.size", width=image.width, height=image.height)
    return image


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            break
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    raise BadInput("the rich menu image is not a readable JPEG", code="line.richmenu.format")


def menu_request(image: MenuImage, locale: str) -> RichMenuRequest:
    """Three equal columns over the whole image, each sending its postback (and showing what was tapped)."""
    column = image.width // len(BUTTONS)
    areas = []
    for n, (name, data) in enumerate(BUTTONS):
        width = image.width - column * n if n == len(BUTTONS) - 1 else column
        label = t(f"line.richmenu.{name}", locale)
        areas.append(RichMenuArea(
            bounds=RichMenuBounds(x=column * n, y=0, width=width, height=image.height),
            action=PostbackAction(label=label[:20], data=data, displayText=label),
        ))
    return RichMenuRequest(size=RichMenuSize(width=image.width, height=image.height), selected=True,
                           name=MENU_NAME, chatBarText=t("line.richmenu.chat_bar", locale)[:14], areas=areas)


def data_api_base(api_base: str) -> str:
    """Where images go: LINE serves them from ``api-data.line.me``; an emulator serves both."""
    base = api_base.rstrip("/")
    return base.replace("://api.line.me", "://api-data.line.me")


async def install(api_base: str, access_token: str, image: bytes, locale: str, *, timeout: float = 30.0) -> str:
    """Create the menu, upload its image and make it the default for every fan; returns its id.

    The SDK sends images to the fixed ``api-data.line.me`` host, so the upload is one plain
    request to :func:`data_api_base` (which an emulator on loopback can answer too).
    """
    found = inspect_image(image)
    configuration = Configuration(host=api_base.rstrip("/"), access_token=access_token)
    async with AsyncApiClient(configuration) as client:
        api = AsyncMessagingApi(client)
        try:
            menu_id = (await api.create_rich_menu(menu_request(found, locale), _request_timeout=timeout)).rich_menu_id
        except ApiException as exc:
            raise _refused(exc.status, exc.body) from None
        try:
            url = f"{data_api_base(api_base)}/v2/bot/richmenu/{menu_id}/content"
            headers = {"Authorization": f"Bearer {access_token}", "Content-Type": found.content_type}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                    http.post(url, data=image, headers=headers) as response:
                if response.status != 200:
                    raise _refused(response.status, await response.text())
            await api.set_default_rich_menu(menu_id, _request_timeout=timeout)
        except BaseException as exc:
            # No half-made menu is left behind (LINE keeps up to 1,000 per channel).
            with contextlib.suppress(Exception):
                await api.delete_rich_menu(menu_id, _request_timeout=timeout)
            if isinstance(exc, ApiException):
                raise _refused(exc.status, exc.body) from None
            raise
        await _retire_older(api, menu_id, timeout)
    return menu_id


async def _retire_older(api: AsyncMessagingApi, menu_id: str, timeout: float) -> None:
    """Delete the menus an earlier run made: a creator redoes the picture, the old ones go."""
    try:
        menus = (await api.get_rich_menu_list(_request_timeout=timeout)).richmenus
        for menu in menus:
            if menu.name == MENU_NAME and menu.rich_menu_id != menu_id:
                await api.delete_rich_menu(menu.rich_menu_id, _request_timeout=timeout)
    except ApiException as exc:  # the new menu is in place; an old one left over is harmless
        log.warning("LINE rich menu: could not delete older superfan menus (HTTP %s)", exc.status)


def _refused(status: int | None, detail: object) -> BadInput:
    return BadInput(f"LINE refused the rich menu (HTTP {status}): {str(detail)[:200]}",
                    code="line.richmenu.refused", status=status)
