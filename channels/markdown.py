"""The Markdown an agent writes, rendered as the small HTML subset chat networks accept.

Owns to_html (always balanced, escaped HTML with Telegram's tags only, which Matrix's
`org.matrix.custom.html` accepts too), visible_length (the UTF-16 length Telegram counts)
and to_plain (the marker-free fallback when a network refuses the markup).
"""

from __future__ import annotations

import re
import string
import unicodedata
from bisect import bisect_left
from html import escape, unescape

_FENCE = re.compile(r"(\s*)(`{3,}|~{3,})\s*([^`]*?)\s*")
_HEADING = re.compile(r"\s{0,3}#{1,6}\s+(\S.*?)(?:\s+#+)?\s*")
_QUOTE = re.compile(r"\s{0,3}>\s?(.*)")
_RULE = re.compile(r"\s{0,3}([-*_])(?:\s*\1){2,}\s*")
_BULLET = re.compile(r"(\s*)[-*+]\s+(.*)")
_LINK = re.compile(
    r"!?\[([^\[\]\n]+)\]\(\s*([^()\s]+(?:\([^()\s]*\)[^()\s]*)*)(?:\s+\"[^\"\n]*\")?\s*\)"
)
_SAFE_URL = re.compile(r"https?://[^\s/?#]|tg://\w|mailto:\S", re.IGNORECASE)
_BARE_URL = re.compile(r"https?://\S+", re.IGNORECASE)
_LANG = re.compile(r"[\w+#.-]+")
_TAG = re.compile(r"<[^>]*>")
_PUNCT = frozenset(string.punctuation)
_RULE_TEXT = "———"
_MAX_DEPTH = 16
# Emphasis runs and the tags they open; a run of any other length is literal text.
_EMPHASIS: dict[str, tuple[str, ...]] = {
    "***": ("b", "i"),
    "___": ("b", "i"),
    "**": ("b",),
    "__": ("b",),
    "*": ("i",),
    "_": ("i",),
    "~~": ("s",),
}


def to_html(markdown: str) -> str:
    """Render agent Markdown as Telegram HTML: only b/i/s/code/pre/a/blockquote, balanced."""
    return _render(markdown, plain=False)


def visible_length(html: str) -> int:
    """The length Telegram counts for `html`: tags removed, entities unescaped, UTF-16 units."""
    return len(unescape(_TAG.sub("", html)).encode("utf-16-le")) // 2


def to_plain(markdown: str) -> str:
    """The markdown without its formatting markers (links become "text (url)"); never raises."""
    try:
        return unescape(_TAG.sub("", _render(markdown, plain=True)))
    except Exception:
        return markdown


def _esc(text: str) -> str:
    return escape(text, quote=False)


def _render(markdown: str, *, plain: bool) -> str:
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.fullmatch(lines[i])
        if fence:
            indent, mark, info = fence.groups()
            close = re.compile(rf"\s*{re.escape(mark[0])}{{{len(mark)},}}\s*")
            body: list[str] = []
            i += 1
            while i < len(lines) and not close.fullmatch(lines[i]):
                body.append(_dedent(lines[i], len(indent)))
                i += 1
            i += 1  # the closing fence; an unterminated fence runs to the end
            lang = info.split()[0] if info.split() else ""
            attr = f' class="language-{lang}"' if _LANG.fullmatch(lang) else ""
            out.append(f"<pre><code{attr}>{_esc(chr(10).join(body))}</code></pre>")
            continue
        if _QUOTE.fullmatch(lines[i]):
            quoted: list[str] = []
            while i < len(lines) and (match := _QUOTE.fullmatch(lines[i])):
                quoted.append(_line(match.group(1), plain))
                i += 1
            if plain:
                out.extend("&gt; " + line for line in quoted)
            else:
                out.append("<blockquote>" + "\n".join(quoted) + "</blockquote>")
            continue
        out.append(_line(lines[i], plain))
        i += 1
    return "\n".join(out)


def _dedent(line: str, width: int) -> str:
    strip = len(line) - len(line.lstrip(" "))
    return line[min(strip, width) :]


def _line(text: str, plain: bool) -> str:
    if _RULE.fullmatch(text):
        return _RULE_TEXT
    if heading := _HEADING.fullmatch(text):
        return "<b>" + _inline(heading.group(1), frozenset({"b"}), plain, 0) + "</b>"
    if bullet := _BULLET.fullmatch(text):
        return bullet.group(1) + "• " + _inline(bullet.group(2), frozenset(), plain, 0)
    return _inline(text, frozenset(), plain, 0)


def _is_word(ch: str) -> bool:
    """Letters and digits, except wide (CJK) ones, which have no spaces to bound a word."""
    return ch.isalnum() and unicodedata.east_asian_width(ch) not in ("W", "F")


def _run_end(s: str, i: int) -> int:
    j = i
    while j < len(s) and s[j] == s[i]:
        j += 1
    return j


def _code_spans(s: str) -> dict[int, tuple[int, str]]:
    """Backtick code spans by start index: (end index, content)."""
    spans: dict[int, tuple[int, str]] = {}
    unmatched: set[int] = set()  # run lengths with no closing run left: O(n) overall
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] in _PUNCT:
            i += 2
            continue
        if s[i] != "`":
            i += 1
            continue
        j = _run_end(s, i)
        k = -1 if j - i in unmatched else s.find(s[i:j], j)
        while k != -1 and _run_end(s, k) - k != j - i:
            k = s.find(s[i:j], _run_end(s, k))
        if k == -1:
            unmatched.add(j - i)
            i = j
            continue
        code = s[j:k]
        if len(code) > 2 and code[0] == code[-1] == " " and code.strip():
            code = code[1:-1]
        spans[i] = (k + j - i, code)
        i = k + j - i
    return spans


def _closers(s: str, spans: dict[int, tuple[int, str]]) -> dict[str, list[int]]:
    """Start indices of emphasis runs that can close, outside code spans, by run."""
    found: dict[str, list[int]] = {}
    i = 0
    while i < len(s):
        if i in spans:
            i = spans[i][0]
        elif s[i] == "\\" and i + 1 < len(s) and s[i + 1] in _PUNCT:
            i += 2
        elif s[i] in "*_~":
            j = _run_end(s, i)
            if i > 0 and not s[i - 1].isspace() and (j == len(s) or not _is_word(s[j])):
                found.setdefault(s[i:j], []).append(i)
            i = j
        else:
            i += 1
    return found


def _inline(s: str, active: frozenset[str], plain: bool, depth: int) -> str:
    """Render one line's inline markup; every construct is emitted whole, so tags balance."""
    spans = _code_spans(s)
    closers = _closers(s, spans)
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in _PUNCT:
            out.append(_esc(s[i + 1]))
            i += 2
        elif i in spans:
            end, code = spans[i]
            # Telegram lets no entity contain code inside a link: keep just the text there.
            out.append(_esc(code) if "a" in active else f"<code>{_esc(code)}</code>")
            i = end
        elif c == "`":
            end = _run_end(s, i)
            out.append(s[i:end])
            i = end
        elif c in "![" and "a" not in active and (link := _LINK.match(s, i)) and _safe(link):
            text, url = link.group(1), link.group(2)
            inner = _inline(text, active | {"a"}, plain, depth + 1)
            if not plain:
                out.append(f'<a href="{escape(url, quote=True)}">{inner}</a>')
            else:
                out.append(inner if text == url else f"{inner} ({_esc(url)})")
            i = link.end()
        elif c in "hH" and (i == 0 or not _is_word(s[i - 1])) and (bare := _BARE_URL.match(s, i)):
            out.append(_esc(bare.group()))  # no emphasis inside a bare URL's underscores
            i = bare.end()
        elif c in "*_~":
            end = _run_end(s, i)
            close = _closer(s, i, end, closers, depth)
            if close is None:
                out.append(_esc(s[i:end]))
                i = end
                continue
            tags = [tag for tag in _EMPHASIS[s[i:end]] if tag not in active]
            inner = _inline(s[end:close], active | set(tags), plain, depth + 1)
            opening = "".join(f"<{tag}>" for tag in tags)
            closing = "".join(f"</{tag}>" for tag in reversed(tags))
            out.append(opening + inner + closing)
            i = close + end - i
        else:
            out.append(_esc(c))
            i += 1
    return "".join(out)


def _safe(link: re.Match[str]) -> bool:
    return _SAFE_URL.match(link.group(2)) is not None


def _closer(s: str, i: int, end: int, closers: dict[str, list[int]], depth: int) -> int | None:
    """Where the emphasis run s[i:end] closes, or None when it is literal text."""
    run = s[i:end]
    if run not in _EMPHASIS or depth >= _MAX_DEPTH or end == len(s) or s[end].isspace():
        return None
    if i > 0 and _is_word(s[i - 1]):
        return None  # intraword: snake_case_name, 2*3*4
    candidates = closers.get(run, [])
    at = bisect_left(candidates, end)
    return candidates[at] if at < len(candidates) else None
