"""Telegram formatting: Markdown -> Telegram HTML, its visible length, and the plain fallback."""

from __future__ import annotations

import html
import random
import re
from html.parser import HTMLParser

import pytest

from channels.markdown import to_html, to_plain, visible_length

ALLOWED = {"b", "i", "s", "code", "pre", "a", "blockquote"}
# Every tag the renderer may write, exactly as written; anything else in the output is text.
TAG = re.compile(
    r'</?(?:b|i|s|code|pre|blockquote)>|</a>|<a href="[^"<>]*">|<code class="language-[\w+#.-]+">'
)
ENTITY = re.compile(r"&(?:lt|gt|amp|quot);")


class TelegramHTMLChecker(HTMLParser):
    """Only Telegram's tags, balanced, nested as Telegram allows; collects the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ALLOWED, tag
        assert tag not in self.stack, f"<{tag}> nested in itself: {self.stack}"
        assert not {"code", "pre"} & set(self.stack) or (tag == "code" and self.stack[-1] == "pre")
        if tag == "a":
            assert [name for name, _ in attrs] == ["href"]
            assert re.match(r"(?i)(https?://|tg://|mailto:)", attrs[0][1] or "")
        elif tag == "code" and attrs:
            assert self.stack[-1:] == ["pre"] and attrs[0][0] == "class"
        else:
            assert not attrs, (tag, attrs)
        if tag in ("code", "pre"):
            assert "a" not in self.stack
        if tag == "pre":
            assert not self.stack, f"<pre> inside {self.stack}"
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack}"
        self.stack.pop()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise AssertionError(f"self-closing <{tag}/>")

    def handle_data(self, data: str) -> None:
        if self.stack[-1:] == ["pre"]:
            assert not data, "text directly in <pre>, outside its <code>"
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        assert name in ("lt", "gt", "amp", "quot"), name
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        raise AssertionError(f"unexpected &#{name};")

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        raise AssertionError(f"declaration {decl!r}")

    def handle_pi(self, data: str) -> None:
        raise AssertionError(f"processing instruction {data!r}")

    def unknown_decl(self, data: str) -> None:
        raise AssertionError(f"unknown declaration {data!r}")


def assert_valid_telegram_html(out: str) -> None:
    text = TAG.sub("", out)
    assert "<" not in text and ">" not in text, f"stray angle bracket in {out!r}"
    assert text.count("&") == len(ENTITY.findall(text)), f"bare & in {out!r}"
    checker = TelegramHTMLChecker()
    checker.feed(out)
    checker.close()
    assert not checker.stack, f"unclosed {checker.stack} in {out!r}"
    visible = html.unescape(text)
    assert "".join(checker.text) == visible
    assert visible_length(out) == len(visible.encode("utf-16-le")) // 2


CASES = [
    # emphasis
    ("**bold**", "<b>bold</b>"),
    ("__bold__", "<b>bold</b>"),
    ("*italic*", "<i>italic</i>"),
    ("_italic_", "<i>italic</i>"),
    ("~~strike~~", "<s>strike</s>"),
    ("***both***", "<b><i>both</i></b>"),
    ("a **b** c", "a <b>b</b> c"),
    ("**Note:** x", "<b>Note:</b> x"),
    ("(*aside*)", "(<i>aside</i>)"),
    ("*a **b** c*", "<i>a <b>b</b> c</i>"),
    ("**粗体**文字", "<b>粗体</b>文字"),
    ("snake_case_name", "snake_case_name"),
    ("2*3*4", "2*3*4"),
    ("file_name_ here", "file_name_ here"),
    ("x*y* z", "x*y* z"),
    ("x**2 + y**2", "x**2 + y**2"),
    ("2 * 3 * 4", "2 * 3 * 4"),
    ("*foo*bar", "*foo*bar"),
    ("~single~", "~single~"),
    ("a **** b", "a **** b"),
    ("** not bold **", "** not bold **"),
    ("**bold", "**bold"),
    ("bold**", "bold**"),
    ("*a", "*a"),
    ("\\*not italic\\*", "*not italic*"),
    ("**a\nb**", "**a\nb**"),
    # code
    ("`code`", "<code>code</code>"),
    ("`**x**`", "<code>**x**</code>"),
    ("`a < b & c`", "<code>a &lt; b &amp; c</code>"),
    ("``a ` b``", "<code>a ` b</code>"),
    ("`unclosed", "`unclosed"),
    ("**bold with `code` inside**", "<b>bold with <code>code</code> inside</b>"),
    ("`[x](http://a.b)`", "<code>[x](http://a.b)</code>"),
    ("**a `**` b**", "<b>a <code>**</code> b</b>"),
    # fenced code
    ("```python\nx = a<b\n```", '<pre><code class="language-python">x = a&lt;b</code></pre>'),
    ("```\n**x** & _y_\n```", "<pre><code>**x** &amp; _y_</code></pre>"),
    ("```\nopen\n**x**", "<pre><code>open\n**x**</code></pre>"),
    ("```\n```", "<pre><code></code></pre>"),
    ('```"><script>\nx\n```', "<pre><code>x</code></pre>"),
    ("a\n```sh\nls\n```\nb", 'a\n<pre><code class="language-sh">ls</code></pre>\nb'),
    ("  ```\n  indented\n  ```", "<pre><code>indented</code></pre>"),
    ("````\n```\n````", "<pre><code>```</code></pre>"),
    ("```x```", "<code>x</code>"),
    # links
    ("[site](https://example.com)", '<a href="https://example.com">site</a>'),
    ("[s](http://a.b/c_(d))", '<a href="http://a.b/c_(d)">s</a>'),
    ('[q](https://a.b/?x="1"&y=2)', '<a href="https://a.b/?x=&quot;1&quot;&amp;y=2">q</a>'),
    ("[me](tg://user?id=1)", '<a href="tg://user?id=1">me</a>'),
    ("[mail](mailto:a@b.c)", '<a href="mailto:a@b.c">mail</a>'),
    ("[**b**](https://a.b)", '<a href="https://a.b"><b>b</b></a>'),
    ("[`c`](https://a.b)", '<a href="https://a.b">c</a>'),
    ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
    ("[x](JavaScript:alert(1))", "[x](JavaScript:alert(1))"),
    ("[x](data:text/html,hi)", "[x](data:text/html,hi)"),
    ("[x](/relative)", "[x](/relative)"),
    ("[x](https://)", "[x](https://)"),
    ("[x]", "[x]"),
    ("https://a.b/_x_y_", "https://a.b/_x_y_"),
    # blocks
    ("# Title", "<b>Title</b>"),
    ("### Sub **x** ###", "<b>Sub x</b>"),
    ("###### six", "<b>six</b>"),
    ("####### seven", "####### seven"),
    ("#hashtag", "#hashtag"),
    ("> quoted", "<blockquote>quoted</blockquote>"),
    ("> a\n> **b**\nc", "<blockquote>a\n<b>b</b></blockquote>\nc"),
    ("> a\n\n> b", "<blockquote>a</blockquote>\n\n<blockquote>b</blockquote>"),
    (">> nested", "<blockquote>&gt; nested</blockquote>"),
    ("- one\n- two", "• one\n• two"),
    ("* one\n  * two", "• one\n  • two"),
    ("1. first\n2. *second*", "1. first\n2. <i>second</i>"),
    ("-5 degrees", "-5 degrees"),
    ("a\n---\nb", "a\n———\nb"),
    ("***", "———"),
    ("- - -", "———"),
    # escaping
    ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("&amp;", "&amp;amp;"),
    ('say "hi"', 'say "hi"'),
    ("<b>not a tag</b>", "&lt;b&gt;not a tag&lt;/b&gt;"),
    ("", ""),
]


@pytest.mark.parametrize(("markdown", "expected"), CASES)
def test_to_html(markdown: str, expected: str) -> None:
    out = to_html(markdown)
    assert out == expected
    assert_valid_telegram_html(out)


NASTY = [
    "",
    "*",
    "**",
    "***",
    "_",
    "`",
    "```",
    "~~",
    "[",
    "](",
    "<",
    ">",
    "&",
    "\n\n\n",
    "*_*_*_*",
    "**_**_**_",
    "_*_*a*_*_",
    "**a *b** c*",
    "*a **b* c**",
    "~~a **b~~ c**",
    "`a``b```c````",
    "[a](http://x)[b](http://y",
    "[a *b](http://x) c*",
    "[`x](http://y)`",
    "**[a](http://b**)",
    "[a](http://b)**",
    "<a href='x'>&lt;&#60;&#x3c;</a>",
    "&nbsp;&copy;&amp;&#9731;",
    "> ```\n> code\n> ```",
    "- ```\n  x\n- y",
    "```\n> not quote\n# not heading\n",
    "# ```\n```",
    "> # h\n> - **b\n> _i_",
    "\\",
    "\\\\*a*",
    "a\\",
    "\\`code`",
    "😀 *émoji* _ü_ **ß** ~~ñ~~",
    "_привет_ *мир* __жирный__",
    "**日本語*混在**テスト*",
    "\u200b*\u200ba\u200b*",
    "\t*tab*\t_x_\t",
    "\r\n**a**\r\n`b`\r",
    "*" * 5000,
    "_a " * 2000,
    "`" * 999 + "x",
    "**" * 1000 + "x" + "**" * 1000,
    "**__" * 600 + "x" + "__**" * 600,
    "[" * 300 + "x" + "](http://a)" * 300,
    "a" * 10000,
    "<" * 100 + "&" * 100 + ">" * 100,
    "```" + "\n" * 50 + "x",
    "~~~\n<b>\n~~~",
    "__init__ and __name__",
    "mailto:x *tg://y* [z](tg://)",
    'he said "**hi**" & <left>',
]


def _random_inputs(count: int) -> list[str]:
    rng = random.Random(20240607)
    pieces = [
        "*",
        "**",
        "_",
        "__",
        "`",
        "```",
        "~~",
        "[",
        "]",
        "(",
        ")",
        "<",
        ">",
        "&",
        "\n",
        " ",
        "a",
        "bc",
        "é",
        "日本",
        "😀",
        "\\",
        "#",
        "> ",
        "- ",
        "1. ",
        "http://x.y/",
        "](https://a.b)",
        "&amp;",
        '"',
        "```py\n",
        "\n```\n",
        "---",
    ]
    return ["".join(rng.choices(pieces, k=rng.randint(1, 40))) for _ in range(count)]


ALL_INPUTS = [markdown for markdown, _ in CASES] + NASTY + _random_inputs(400)


@pytest.mark.parametrize("markdown", ALL_INPUTS)
def test_output_is_always_valid_telegram_html(markdown: str) -> None:
    assert_valid_telegram_html(to_html(markdown))


@pytest.mark.parametrize(
    "markdown", [m for m in ALL_INPUTS if not any(s in m for s in ("](", "```", "~~~"))]
)
def test_no_letters_lost(markdown: str) -> None:
    """Without links or fences (which drop URLs and languages) every letter stays visible."""
    visible = html.unescape(TAG.sub("", to_html(markdown)))
    assert [c for c in visible if c.isalnum()] == [c for c in markdown if c.isalnum()]


@pytest.mark.parametrize("markdown", ALL_INPUTS)
def test_to_plain_never_raises_or_marks_up(markdown: str) -> None:
    plain = to_plain(markdown)
    assert isinstance(plain, str)
    assert "<b>" not in plain or "<b>" in markdown


@pytest.mark.parametrize(
    ("rendered", "length"),
    [
        ("", 0),
        ("plain", 5),
        ("<b>bold</b>", 4),
        ("a &lt; b &amp;&amp; c &gt; d", 14),
        ('<a href="https://a.b/?x=&quot;1&quot;">q</a>', 1),
        ('<pre><code class="language-py">x</code></pre>', 1),
        ("&amp;amp;", 5),
        ("😀", 2),
        ("é日", 2),
        ("<blockquote>a\nb</blockquote>", 3),
    ],
)
def test_visible_length(rendered: str, length: int) -> None:
    assert visible_length(rendered) == length


def test_visible_length_of_rendered_markdown() -> None:
    assert visible_length(to_html("**a < b** [link](https://x.y/z)")) == len("a < b link")


@pytest.mark.parametrize(
    ("markdown", "plain"),
    [
        ("**bold** and __b__", "bold and b"),
        ("*it* _it_ ~~s~~", "it it s"),
        ("`x**y`", "x**y"),
        ("[site](https://a.b)", "site (https://a.b)"),
        ("[https://a.b](https://a.b)", "https://a.b"),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
        ("# Title\n- item", "Title\n• item"),
        ("> quote", "> quote"),
        ("```py\nif a < b:\n    pass\n```", "if a < b:\n    pass"),
        ("a < b && c > d", "a < b && c > d"),
        ("&amp;", "&amp;"),
        ("snake_case_name 2*3*4 **open", "snake_case_name 2*3*4 **open"),
        ("", ""),
    ],
)
def test_to_plain(markdown: str, plain: str) -> None:
    assert to_plain(markdown) == plain
