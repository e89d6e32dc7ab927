"""Fake OpenAI-compatible /audio/transcriptions endpoint (multipart in, {"text"} out) for
tests: it records each upload (file bytes, name, model, the Authorization header) and
answers the scripted transcript, or a scripted HTTP status."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from aiohttp import web
from served import Served

PATH = "/v1/audio/transcriptions"


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str
    model: str
    authorization: str


class FakeTranscribe:
    """`with FakeTranscribe() as t:` then TRANSCRIBE_URL=t.url."""

    def __init__(self, text: str = "hello from the voice note", status: int = 200) -> None:
        self.text, self.status = text, status
        self.url = ""
        self._lock = threading.Lock()
        self._uploads: list[Upload] = []
        self._served = Served("fake-transcribe")

    @property
    def uploads(self) -> list[Upload]:
        with self._lock:
            return list(self._uploads)

    def __enter__(self) -> FakeTranscribe:
        self.url = self._served.start(self._app) + PATH
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._served.stop()

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self._transcribe)
        return app

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        file = form.get("file")
        if not isinstance(file, web.FileField):
            return web.json_response({"error": {"message": "no file"}}, status=400)
        upload = Upload(
            file.file.read(),
            file.filename,
            str(form.get("model", "")),
            request.headers.get("Authorization", ""),
        )
        with self._lock:
            self._uploads.append(upload)
        if self.status != 200:
            return web.json_response({"error": {"message": "scripted"}}, status=self.status)
        return web.json_response({"text": self.text})
