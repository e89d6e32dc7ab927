"""An aiohttp app served on 127.0.0.1 from an event loop in a daemon thread.

The fake servers use it so that sync tests (blocked on a subprocess) and async tests (on
their own loop) can both talk to them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web


class Served:
    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self, make_app: Callable[[], web.Application]) -> str:
        """Serve the app `make_app` builds (on the server's loop); return its base URL."""
        loop = asyncio.new_event_loop()
        self.loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        try:
            port = asyncio.run_coroutine_threadsafe(self._serve(make_app), loop).result(10)
        except BaseException:
            self.stop()
            raise
        return f"http://127.0.0.1:{port}"

    async def _serve(self, make_app: Callable[[], web.Application]) -> int:
        self._runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return int(self._runner.addresses[0][1])

    def call_soon(self, fn: Callable[[], object]) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        loop, thread, runner = self.loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self.loop = self._thread = self._runner = None
