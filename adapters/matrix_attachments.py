"""Reading a Matrix file event into an engine ``Attachment``.

A small text file (plain or end-to-end encrypted) is downloaded and read into ``text``,
so the model sees it as part of the message. Anything else (images, audio, big files)
is described by name and size only; a failed download is logged and never loses the
message that came with it.
"""

from __future__ import annotations

import logging
from typing import Any

from nio import AsyncClient, DownloadResponse
from nio.crypto import decrypt_attachment
from nio.events.room_events import RoomEncryptedMedia

from adapters.matrix_mapping import is_text_file
from engine.types import Attachment

log = logging.getLogger(__name__)


def _info(event: Any) -> tuple[str, str | None, int]:
    content = event.source.get("content", {})
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    filename = content.get("filename") or event.body or "file"
    mimetype = info.get("mimetype") or getattr(event, "mimetype", None)
    size = info.get("size") if isinstance(info.get("size"), int) else 0
    return str(filename), mimetype, size


async def read_attachment(client: AsyncClient, event: Any, max_bytes: int) -> Attachment:
    """The file behind ``event``; ``text`` is set only for a readable text file within ``max_bytes``."""
    filename, mimetype, size = _info(event)
    readable = event.source.get("content", {}).get("msgtype") == "m.file" and is_text_file(filename, mimetype)
    if not readable or size > max_bytes:
        return Attachment(filename=filename, content_type=mimetype, size=size)
    raw = await _download(client, event)
    if raw is None or len(raw) > max_bytes:
        return Attachment(filename=filename, content_type=mimetype, size=size or len(raw or b""))
    return Attachment(
        filename=filename, content_type=mimetype, size=len(raw), text=raw.decode("utf-8", errors="replace")
    )


async def _download(client: AsyncClient, event: Any) -> bytes | None:
    try:
        response = await client.download(mxc=event.url)
    except Exception as exc:
        log.warning("matrix: could not download %s: %s", event.url, exc)
        return None
    if not isinstance(response, DownloadResponse) or not isinstance(response.body, bytes):
        log.warning("matrix: could not download %s: %s", event.url, getattr(response, "message", response))
        return None
    if not isinstance(event, RoomEncryptedMedia):
        return response.body
    try:
        return decrypt_attachment(response.body, event.key["k"], event.hashes["sha256"], event.iv)
    except Exception as exc:  # a bad key or hash: the file is unreadable, the message is not lost
        log.warning("matrix: could not decrypt %s: %s", event.url, exc)
        return None


__all__ = ["read_attachment"]
