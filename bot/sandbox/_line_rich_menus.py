"""The LINE emulator's rich menu routes: create, list, upload the image, make one the default, delete."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from aiohttp import web

from bot.sandbox._line_state import ApiError, RichMenu, rich_menu_problems


class RichMenuRoutes:
    """Rich menus as LINE keeps them for a channel, answered as api.line.me answers."""

    def __init__(self) -> None:
        #: rich menus by id: the request body, and the uploaded image and its content type
        self.rich_menus: dict[str, RichMenu] = {}
        self.default_rich_menu: str | None = None

    def _add_rich_menu_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/bot/richmenu", self._create_rich_menu)
        app.router.add_get("/v2/bot/richmenu/list", self._list_rich_menus)
        app.router.add_post("/v2/bot/richmenu/{menu_id}/content", self._rich_menu_image)
        app.router.add_post("/v2/bot/user/all/richmenu/{menu_id}", self._default_rich_menu)
        app.router.add_delete("/v2/bot/richmenu/{menu_id}", self._delete_rich_menu)

    async def _create_rich_menu(self, request: web.Request) -> web.Response:
        body: Any = None
        with contextlib.suppress(ValueError):  # as the emulator's middleware reads it
            body = await request.json()
        problems = rich_menu_problems(body)
        if problems:
            raise ApiError(400, f"The request body has {len(problems)} error(s)",
                           extra={"details": [{"message": p} for p in problems]})
        menu_id = f"richmenu-{secrets.token_hex(16)}"
        self.rich_menus[menu_id] = RichMenu(body)
        return web.json_response({"richMenuId": menu_id})

    async def _list_rich_menus(self, request: web.Request) -> web.Response:
        return web.json_response({"richmenus": [{"richMenuId": menu_id, **menu.body}
                                                for menu_id, menu in self.rich_menus.items()]})

    def _menu(self, request: web.Request) -> RichMenu:
        menu = self.rich_menus.get(request.match_info["menu_id"])
        if menu is None:
            raise ApiError(404, "Not found")
        return menu

    async def _rich_menu_image(self, request: web.Request) -> web.Response:
        menu = self._menu(request)
        content_type = request.headers.get("Content-Type", "")
        if content_type not in ("image/png", "image/jpeg"):
            raise ApiError(415, "Unsupported Media Type")
        data = await request.read()
        if len(data) > 1024 * 1024:
            raise ApiError(413, "Request Entity Too Large")
        if menu.image is not None:
            raise ApiError(400, "An image has already been uploaded to the richmenu")
        menu.image, menu.content_type = data, content_type
        return web.json_response({})

    async def _default_rich_menu(self, request: web.Request) -> web.Response:
        menu_id = request.match_info["menu_id"]
        if self._menu(request).image is None:
            raise ApiError(400, "must upload richmenu image before applying it to user")
        self.default_rich_menu = menu_id
        return web.json_response({})

    async def _delete_rich_menu(self, request: web.Request) -> web.Response:
        self._menu(request)
        menu_id = request.match_info["menu_id"]
        del self.rich_menus[menu_id]
        if self.default_rich_menu == menu_id:
            self.default_rich_menu = None
        return web.json_response({})
