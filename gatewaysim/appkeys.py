"""The keys the aiohttp application stores its shared state under (a leaf module: anyone may import it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .state import Gateway

#: The simulator's whole state (`Gateway`) on the application.
GW_KEY: web.AppKey[Gateway] = web.AppKey("gateway")
