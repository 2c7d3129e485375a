"""Outside values (query parameters, names and ids read from checkpoint files, uploaded
file names, error texts quoting file content) shown inside Streamlit markdown.

st.markdown, st.caption, st.warning, st.error, st.success, st.info, st.toast and
st.progress's text all read their string as markdown: a value like
`[click](http://evil.example)` or `![x](http://evil.example/p.png)` would become a link
or an image. plain() escapes it so it shows as the same text; code() shows it as a code
span (the backticks of run ids).
"""
from __future__ import annotations

import re

# Backslash escapes (CommonMark: any ASCII punctuation may be escaped and then shows as
# itself). These start inline markup anywhere in a line: emphasis, code, links and
# images, HTML and autolinks, GFM strikethrough and tables, :red[...] directives,
# $math$, e-mail autolinks.
_ESCAPES = {ord(c): "\\" + c for c in "\\`*_[](){}<>!|~$@"}
# Block markup only counts at the start of a line: a heading, a list item, a quote.
_BLOCK_START = re.compile(r"^([#+=-]|\d+(?=[.)]))")
# GFM turns bare URLs and e-mail addresses into links: break the "://", "www." and
# "@" that it looks for. Streamlit's renderer looks for them in the text once the escapes
# are resolved (a backslash alone left http://evil.example a live link in the browser),
# so an invisible word joiner goes in as well.
_BARE_URL = re.compile(r"(://|(?<![\w])www\.)", re.IGNORECASE)
_JOINER = "\u2060"   # WORD JOINER: zero width, no line break


def _one_line(value) -> str:
    return " ".join(str(value).split())   # a newline could start a heading or a list


def plain(value) -> str:
    """`value` as markdown that shows exactly its text (on one line), never a link, an
    image, a heading or emphasis."""
    text = _one_line(value).translate(_ESCAPES)
    text = _BARE_URL.sub(lambda m: "\\:" + _JOINER + "//" if m.group(0) == "://"
                         else m.group(0)[:3] + _JOINER + "\\.", text)
    text = text.replace("\\@", _JOINER + "\\@")
    match = _BLOCK_START.match(text)
    if match:   # "# x", "- x", "1. x": escape the marker
        end = match.end()
        text = (text[:end] + "\\" + text[end:] if match.group(0)[0].isdigit()
                else "\\" + text)
    return text


_CODE_SAFE = re.compile(r"[^`\[\]()<>!\\]+")


def code(value) -> str:
    """An id (a run id, a hash, a path) as an inline code span, as the pages show them.
    Nothing in a code span is markdown, but a backtick would close it early; a value
    with a backtick, brackets or the like is no id, so it is shown as plain() text."""
    text = _one_line(value)
    return f"`{text}`" if _CODE_SAFE.fullmatch(text) else plain(text)
