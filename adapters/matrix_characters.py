"""Showing which character of a room's cast wrote a Matrix message, and reading it back.

A room with a cast of two or more has one Matrix account speaking for several characters.
Every message of a character starts with its name in bold (``Ember: …``, the MSC4144
fallback, so every client shows who speaks) and carries the character twice: in
``org.hearth.character`` (hearth's own record, read back when a user replies to it) and in
MSC4144's per-message profile, so clients that support it show the name and the card image
as the sender. The card image is uploaded to the media repository once per character and
image, and its ``mxc://`` URI is kept in the adapter's ``SessionState`` across restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nio import AsyncClient, UploadResponse

from adapters.matrix_render import HTML_FORMAT, render_html, text_content
from adapters.recent_ids import RecentMap
from adapters.rendering import defuse_mentions
from engine.types import SessionState, Speaker

log = logging.getLogger(__name__)

CHARACTER_KEY = "org.hearth.character"
# MSC4144 is not merged yet: clients (gomuks, Sable, Cinny forks) read the unstable name.
PROFILE_KEY = "com.beeper.per_message_profile"
PROFILE_FALLBACK_OPEN = "<strong data-mx-profile-fallback>"
MAX_PROFILE_BYTES = 255  # MSC4144: id and displayname are at most 255 bytes of UTF-8
AVATAR_STATE = "avatar/"  # SessionState name prefix: avatar/<key> = "<sha256> <mxc uri>"


@dataclass(frozen=True)
class Character:
    """A speaker as Matrix shows it: the name and key, and its avatar's ``mxc://`` URI if uploaded."""

    name: str
    key: str
    avatar_url: str | None = None


def _clip(text: str) -> str:
    """Cut to MSC4144's 255-byte limit without splitting a character, and drop null bytes."""
    return text.replace("\x00", "").encode("utf-8")[:MAX_PROFILE_BYTES].decode("utf-8", errors="ignore")


def character_content(text: str, msgtype: str, character: Character) -> dict[str, Any]:
    """One message of ``character``: ``Name: text`` with the name in bold, and who wrote it.

    The bold name is MSC4144's fallback (``has_fallback``), which supporting clients strip
    because they show the name as the sender instead.
    """
    name = _clip(defuse_mentions(" ".join(character.name.split())) or character.key)
    content = text_content(text, msgtype)
    body = content["body"]
    rendered = content.get("formatted_body") or render_html(body)
    fallback = f"{PROFILE_FALLBACK_OPEN}{html.escape(name, quote=False)}: </strong>"
    # A reply opening with a heading, list or code block gets the name before that block.
    rendered = "<p>" + fallback + rendered[3:] if rendered.startswith("<p>") else fallback + rendered
    content["body"] = f"{name}: {body}"
    content["format"] = HTML_FORMAT
    content["formatted_body"] = rendered
    content[CHARACTER_KEY] = {"name": character.name, "key": character.key}  # as the engine knows it
    profile: dict[str, Any] = {"id": _clip(character.key), "displayname": name, "has_fallback": True}
    if character.avatar_url:
        profile["avatar_url"] = character.avatar_url
    content[PROFILE_KEY] = profile
    return content


def character_of(content: Mapping[str, Any]) -> str | None:
    """The name of the character that wrote an event, from ``org.hearth.character`` (an edit's too)."""
    for source in (content, content.get("m.new_content")):
        if isinstance(source, Mapping):
            tag = source.get(CHARACTER_KEY)
            if isinstance(tag, Mapping) and isinstance(tag.get("name"), str) and tag["name"].strip():
                return tag["name"]
    return None


class CharacterAvatars:
    """Each character's card image in the media repository, uploaded once and then reused.

    Keyed by the character's key and the image's hash, so a changed card image is uploaded
    again. A failed upload is logged once per image and the message goes out without an avatar.
    """

    def __init__(self, client: AsyncClient, state: SessionState) -> None:
        self.client = client
        self.state = state
        self._urls: dict[str, str] = {}
        self._failed: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self.uploads = 0  # how many images went to the media repository (tests check "once")

    async def character(self, speaker: Speaker) -> Character:
        """The speaker with its avatar's URI (None when it has no image or the upload failed)."""
        return Character(speaker.name, speaker.key, await self.url_for(speaker))

    async def url_for(self, speaker: Speaker) -> str | None:
        data = speaker.avatar.data if speaker.avatar is not None else None
        if not data:
            return None
        digest = hashlib.sha256(data).hexdigest()
        cache = f"{speaker.key}\x00{digest}"
        if cache in self._failed:
            return None
        async with self._locks.setdefault(speaker.key, asyncio.Lock()):  # two rooms, one upload
            url = self._urls.get(cache) or await self._stored(speaker.key, digest)
            if url is None:
                url = await self._upload(speaker, data)
                if url is None:
                    self._failed.add(cache)
                    return None
                await self.state.set(AVATAR_STATE + speaker.key, f"{digest} {url}")
            self._urls[cache] = url
            return url

    async def _stored(self, key: str, digest: str) -> str | None:
        stored = await self.state.get(AVATAR_STATE + key)
        stored_digest, _, url = (stored or "").partition(" ")
        return url if stored_digest == digest and url.startswith("mxc://") else None

    async def _upload(self, speaker: Speaker, data: bytes) -> str | None:
        avatar = speaker.avatar
        assert avatar is not None
        mimetype = avatar.content_type or "image/png"
        try:
            response, _ = await self.client.upload(
                io.BytesIO(data), mimetype, avatar.filename or f"{speaker.key}.png", filesize=len(data)
            )
        except Exception as exc:
            response = exc
        if not isinstance(response, UploadResponse):
            reason = getattr(response, "message", None) or response
            log.warning("matrix: could not upload %s's avatar (%s); sending without it", speaker.name, reason)
            return None
        self.uploads += 1
        return response.content_uri


class CharacterMessages:
    """Which character wrote each of the bot's recent events (bounded), to route replies to them."""

    def __init__(self, limit: int) -> None:
        self._names: RecentMap[str, str] = RecentMap(limit)

    def remember(self, event_id: str, name: str) -> None:
        self._names[event_id] = name

    def name_of(self, event_id: str) -> str | None:
        return self._names.get(event_id)


__all__ = [
    "CHARACTER_KEY",
    "PROFILE_KEY",
    "Character",
    "CharacterAvatars",
    "CharacterMessages",
    "character_content",
    "character_of",
]
