"""Sending to Telegram: captions cut to its limit, HTML with a plain-text retry, and its
errors as the router's DeliveryError (retried) or PermanentDeliveryError (not).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiohttp import ClientError

from channels.markdown import to_html, to_plain, visible_length
from nanoclaw.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)
MAX_CAPTION = 1024  # UTF-16 units of visible text
REFUSED = (  # retrying cannot help: the chat or the bot is gone, or the file too big
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramUnauthorizedError,
    TelegramEntityTooLarge,
)


def photo_refused(exc: TelegramBadRequest) -> bool:
    """Telegram could not make a photo of it (PHOTO_INVALID_DIMENSIONS, IMAGE_PROCESS_FAILED,
    ...): the same bytes still go as a document."""
    return any(code in str(exc) for code in ("PHOTO_", "IMAGE_PROCESS_FAILED"))


def fit_caption(caption: str) -> tuple[str, bool]:
    """The caption to send and whether as markup: plain and cut short past Telegram's limit."""
    if visible_length(to_html(caption)) <= MAX_CAPTION:
        return caption, True
    units = to_plain(caption).encode("utf-16-le")[: 2 * (MAX_CAPTION - 1)]
    return units.decode("utf-16-le", errors="ignore") + "…", False


async def markup_or_plain(
    chat_id: str, text: str, html: bool, call: Callable[[str, str | None], Awaitable[None]]
) -> None:
    """`call(text, mode)` with HTML, once more in plain text if Telegram cannot parse it."""
    if html:
        try:
            await call(to_html(text), "HTML")
            return
        except TelegramBadRequest as exc:
            if "parse entities" not in str(exc):
                raise
            log.warning("telegram: markup refused for %s (%s); sending plain", chat_id, exc)
        text = to_plain(text)
    await call(text, None)


@contextlib.contextmanager
def delivery_errors() -> Iterator[None]:
    """Telegram's and the network's errors as DeliveryError, or Permanent when retrying is vain."""
    try:
        yield
    except TelegramRetryAfter as exc:
        raise DeliveryError(f"flood control: {exc}", retry_after=exc.retry_after) from exc
    except REFUSED as exc:
        raise PermanentDeliveryError(f"telegram refused: {exc}") from exc
    except TelegramBadRequest as exc:
        if "chat not found" in str(exc).lower():
            raise PermanentDeliveryError(f"telegram: {exc}") from exc
        raise DeliveryError(f"telegram: {exc}") from exc
    except (TelegramNetworkError, TelegramServerError, ClientError, TimeoutError) as exc:
        raise DeliveryError(f"telegram unreachable: {exc}") from exc
