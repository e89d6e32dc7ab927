"""When the next model of a group's chain answers instead: an overloaded (529), failing (5xx)
or rate-limited (429) answer that the SDK's own retries did not get past; and what the run
says about it: each hand-over in the log, the first answer by a fallback in the chat.
"""

from __future__ import annotations

from nanoclaw.proxy.providers import Target


def falls_back(status: int) -> bool:
    """Whether an upstream status (after the SDK's retries) hands the request on."""
    return status == 429 or status >= 500


def fallback_note(answering: Target) -> str:
    """The chat's line, once per run."""
    return f"(my usual model is unavailable right now; answering with {answering.model})"


def fallback_log(failed: Target, status: int, next_one: Target) -> str:
    return (
        f"{failed.provider} model {failed.model} answered {status} after retries; "
        f"trying {next_one.provider} model {next_one.model}"
    )


def fallback_answered(answering: Target) -> str:
    return (
        f"a fallback answered: {answering.provider} model {answering.model} (warned once per run)"
    )
