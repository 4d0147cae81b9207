"""Reading a Matrix file event into an engine ``Attachment``.

A small text file (plain or end-to-end encrypted) is downloaded and read into ``text``,
so the model sees it as part of the message. Anything else (images, audio, big files)
is described by name and size only; a failed download is logged and never loses the
message that came with it.

A Matrix command event cannot carry a file, so a ``!hearth`` command sent as a reply to a
file event takes that file's bytes (``data``) as its attachment: that is how
``persona import`` gets a character card.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from nio import AsyncClient, DownloadResponse, MegolmEvent, RoomGetEventResponse
from nio.crypto import decrypt_attachment
from nio.events.room_events import RoomEncryptedMedia, RoomMessageMedia

from adapters.matrix_mapping import is_text_file
from engine.types import Attachment

log = logging.getLogger(__name__)


def _info(event: Any) -> tuple[str, str | None, int]:
    content = event.source.get("content", {})
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    filename = content.get("filename") or event.body or "file"
    mimetype = info.get("mimetype") or getattr(event, "mimetype", None)
    size = info.get("size")
    return str(filename), str(mimetype) if mimetype else None, size if isinstance(size, int) else 0


async def read_attachment(client: AsyncClient, event: Any, max_bytes: int) -> Attachment:
    """The file behind ``event``; ``text`` is set only for a readable text file within ``max_bytes``."""
    filename, mimetype, _ = _info(event)
    readable = event.source.get("content", {}).get("msgtype") == "m.file" and is_text_file(filename, mimetype)
    described, raw = await _fetch(client, event, max_bytes, download=readable)
    return described if raw is None else replace(described, text=raw.decode("utf-8", errors="replace"))


async def replied_file(client: AsyncClient, room_id: str, event_id: str, max_bytes: int) -> Attachment | None:
    """The file of the event ``event_id`` (decrypted if need be) with its bytes, or None if it isn't one.

    A file over ``max_bytes`` or a failed download gives an Attachment without ``data``, so
    the command can say what went wrong.
    """
    response = await client.room_get_event(room_id, event_id)
    if not isinstance(response, RoomGetEventResponse):
        return None
    event = response.event
    if isinstance(event, MegolmEvent):
        try:
            event = client.decrypt_event(event)
        except Exception as exc:  # no key for it (yet): treat it like a file we can't read
            log.warning("matrix: could not decrypt the replied-to event %s: %s", event_id, exc)
            return None
    if not isinstance(event, RoomMessageMedia | RoomEncryptedMedia):
        return None
    described, raw = await _fetch(client, event, max_bytes, download=True)
    return described if raw is None else replace(described, data=raw)


async def _fetch(client: AsyncClient, event: Any, max_bytes: int, *, download: bool) -> tuple[Attachment, bytes | None]:
    """The file described by name and size, and its bytes when asked for and within ``max_bytes``."""
    filename, mimetype, size = _info(event)
    raw = await _download(client, event) if download and size <= max_bytes else None
    if raw is None or len(raw) > max_bytes:
        return Attachment(filename=filename, content_type=mimetype, size=size or len(raw or b"")), None
    return Attachment(filename=filename, content_type=mimetype, size=len(raw)), raw


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


__all__ = ["read_attachment", "replied_file"]
