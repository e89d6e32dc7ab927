"""The client of an OpenAI-compatible /audio/transcriptions endpoint (TRANSCRIBE_URL): one
multipart POST of the saved voice note, the transcript back. The key is sent as a bearer
token and never logged; every failure becomes a TranscribeError with a short reason."""

from __future__ import annotations

import json

import aiohttp

MODEL = "whisper-1"  # OpenAI's name; compatible servers accept it or ignore it
TIMEOUT_S = 120
MAX_TRANSCRIPT = 4000  # characters kept in the prompt
MAX_ANSWER = 1024 * 1024  # bytes of the endpoint's JSON read at most


class TranscribeError(Exception):
    """The transcription failed; str() is the reason, fit for the prompt."""


class Transcriber:
    def __init__(self, url: str, key: str | None, timeout_s: float = TIMEOUT_S) -> None:
        self._url = url
        self._key = key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def transcribe(self, data: bytes, name: str, mime: str) -> str:
        form = aiohttp.FormData()
        form.add_field("model", MODEL)
        form.add_field("response_format", "json")
        form.add_field("file", data, filename=name, content_type=mime or "application/octet-stream")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(self._url, data=form, headers=headers) as resp,
            ):
                if resp.status != 200:
                    raise TranscribeError(f"the endpoint answered HTTP {resp.status}")
                raw = bytearray()
                while chunk := await resp.content.read(65536):  # read() gives what is there
                    raw += chunk
                    if len(raw) > MAX_ANSWER:
                        raise TranscribeError(f"the endpoint's answer is over {MAX_ANSWER} bytes")
                body = json.loads(raw)
        except TimeoutError as exc:
            raise TranscribeError("timeout") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise TranscribeError(type(exc).__name__) from exc
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise TranscribeError("the endpoint's answer had no text")
        text = " ".join(text.split())
        return text if len(text) <= MAX_TRANSCRIPT else text[:MAX_TRANSCRIPT] + " [...]"
