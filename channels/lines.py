"""The owner's lines typed at a terminal, read by a thread of their own so that Ctrl+C is
heard at once; one line at a time, and the prompt kept on screen between two questions
(the channel draws it again below each line it prints).
"""

from __future__ import annotations

import asyncio
import threading

from channels.terminal import TerminalChannel


class Typing:
    """The owner's next line, read by one thread at a time so that Ctrl+C is heard at once. A
    thread in input() cannot be stopped: a line asked for while the agent worked and not
    typed yet is the next prompt's too (and the thread is left behind on exit)."""

    def __init__(self, channel: TerminalChannel) -> None:
        self._channel = channel
        self._line: asyncio.Future[str | None] | None = None

    def line(self, prompt: str) -> asyncio.Future[str | None]:
        """The line being typed at `prompt`, or at the prompt already on screen."""
        if self._line is not None:
            return self._line
        loop = asyncio.get_running_loop()
        line: asyncio.Future[str | None] = loop.create_future()

        def settle(text: str | None) -> None:
            if not line.done():
                line.set_result(text)

        def read() -> None:
            try:
                text: str | None = input(prompt)
            except (EOFError, OSError):
                text = None
            loop.call_soon_threadsafe(settle, text)

        self._line = line
        self._channel.prompting(prompt)
        threading.Thread(target=read, name="chat-input", daemon=True).start()
        return line

    def take(self) -> str | None:
        """The line typed (None at the end of input); the prompt left the screen with it."""
        assert self._line is not None and self._line.done()
        text, self._line = self._line.result(), None
        self._channel.prompting(None)
        return text
