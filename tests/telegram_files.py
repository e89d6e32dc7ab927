"""Files of the fake Bot API: `put_file` registers bytes under a file id, getFile names
their path (refusing past the Bot API's 20 MB, as Telegram does), and GET
/file/bot<token>/<path> serves them, recording each download."""

from __future__ import annotations

import secrets
import threading
from typing import Any

from aiohttp import web
from bot_api import ApiError, Msg, Params

MAX_GETFILE = 20 * 1024 * 1024  # the Bot API's limit for files bots download


class FileServer:
    """Mixed into `FakeTelegram`, which owns the lock, the token and the routes."""

    token: str
    _cond: threading.Condition
    _files: dict[str, tuple[str, bytes, int]]
    _downloads: list[str]

    @property
    def downloads(self) -> list[str]:
        """The file paths fetched from /file/bot<token>/, in order."""
        return self._listed(self._downloads)

    def put_file(self, data: bytes, size: int | None = None, **extra: Any) -> Msg:
        """A file the fake serves through getFile: its Bot API object (file_id, file_size and
        `extra`). `size` claims another size than the data's (a file over getFile's cap)."""
        ids = {"file_id": "F" + secrets.token_hex(8), "file_unique_id": secrets.token_hex(4)}
        file: Msg = {**ids, **extra, "file_size": len(data) if size is None else size}
        path = f"documents/file_{len(self._files)}"
        with self._cond:
            self._files[file["file_id"]] = (path, data, file["file_size"])
        return file

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return ApiError(401, "Unauthorized").response()
        path = request.match_info["path"]
        with self._cond:
            found = [data for p, data, _ in self._files.values() if p == path]
            self._downloads.append(path)
            self._cond.notify_all()
        if not found:
            return ApiError(404, "Not Found").response()
        return web.Response(body=found[0], content_type="application/octet-stream")

    async def _m_getfile(self, params: Params) -> Any:
        file_id = str(params.get("file_id", ""))
        with self._cond:
            known = self._files.get(file_id)
        if known is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        path, _, size = known
        if size > MAX_GETFILE:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": file_id[:8],
            "file_size": size,
            "file_path": path,
        }

    def _listed(self, items: list[str]) -> list[str]:
        with self._cond:
            return list(items)
