"""Building the Matrix event content hearth sends: messages, streamed edits and their HTML.

Model output is untrusted text. Markdown is rendered with raw HTML disabled, so any
``<tag>`` the model writes arrives as escaped text, never as markup a client would obey.
Every event carries ``m.mentions: {}`` (no intentional mentions) and its body has
``@room`` defused, so nothing the model writes can ping a room or a user.
"""

from __future__ import annotations

import html
from typing import Any

from markdown_it import MarkdownIt

from adapters.rendering import defuse_mentions

HTML_FORMAT = "org.matrix.custom.html"
MAX_BODY_CHARS = 30_000  # Matrix events are capped at 64 KiB; body and HTML both count
TRUNCATED = "\n\n… (cut: too long for one Matrix message)"

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(
    ["strikethrough", "table"]
)


def render_html(text: str) -> str:
    """Markdown → HTML, with any HTML in ``text`` escaped rather than passed through."""
    return _markdown.render(text).strip()


def needs_html(text: str, rendered: str) -> bool:
    """Plain text renders as one ``<p>``; send HTML only when markdown changed something."""
    return rendered != f"<p>{html.escape(text, quote=False)}</p>"


def _fit(text: str) -> str:
    return text if len(text) <= MAX_BODY_CHARS else text[:MAX_BODY_CHARS] + TRUNCATED


def text_content(text: str, msgtype: str = "m.text", *, markdown: bool = True) -> dict[str, Any]:
    """The body (and, when markdown formats anything, the HTML) of one message, mentions defused."""
    body = _fit(defuse_mentions(text))
    content: dict[str, Any] = {"msgtype": msgtype, "body": body, "m.mentions": {}}
    if markdown:
        rendered = render_html(body)
        if needs_html(body, rendered):
            content["format"] = HTML_FORMAT
            content["formatted_body"] = rendered
    return content


def preformatted_content(text: str, msgtype: str = "m.notice") -> dict[str, Any]:
    """Aligned command output (tables) as a code block, so columns survive proportional fonts."""
    body = _fit(defuse_mentions(text))
    return {
        "msgtype": msgtype,
        "body": body,
        "format": HTML_FORMAT,
        "formatted_body": f"<pre><code>{html.escape(body, quote=False)}</code></pre>",
        "m.mentions": {},
    }


def with_relation(content: dict[str, Any], *, reply_to: str | None, thread: str | None) -> dict[str, Any]:
    """Answer ``reply_to``; inside a thread, stay in it (with the reply as the thread's fallback)."""
    if thread is not None:
        relates: dict[str, Any] = {"rel_type": "m.thread", "event_id": thread}
        relates["is_falling_back"] = reply_to is None
        relates["m.in_reply_to"] = {"event_id": reply_to or thread}
        content["m.relates_to"] = relates
    elif reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    return content


def edit_content(original_event_id: str, new: dict[str, Any]) -> dict[str, Any]:
    """An ``m.replace`` edit: clients show ``m.new_content``; the outer body is the fallback."""
    fallback: dict[str, Any] = {"msgtype": new["msgtype"], "body": "* " + new["body"], "m.mentions": {}}
    if "formatted_body" in new:
        fallback["format"] = HTML_FORMAT
        fallback["formatted_body"] = "* " + new["formatted_body"]
    fallback["m.new_content"] = new
    fallback["m.relates_to"] = {"rel_type": "m.replace", "event_id": original_event_id}
    return fallback


__all__ = ["edit_content", "preformatted_content", "render_html", "text_content", "with_relation"]
