"""dpytest harness: a real discord.py client, in-process, wired to a real engine and model.

dpytest replaces discord.py's HTTP client and gateway with fakes, so messages go through
discord.py's own parsing and dispatch. ``Wire`` records what would go over the wire (every
send and edit payload, with its ``allowed_mentions``), which dpytest's own queue drops.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import discord
import discord.ext.test as dpytest
import discord.ext.test.backend as back
import discord.ext.test.callbacks as callbacks
import discord.ext.test.factories as facts
import discord.webhook.async_ as webhook_async
import pytest
import pytest_asyncio
from discord.webhook.async_ import AsyncWebhookAdapter

from adapters.discord_adapter import DiscordAdapter, make_client
from adapters.discord_mapping import room_for
from engine.reply import Done, Failed, ReplyStream, TextChunk
from engine.types import RoomRef

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_ASSISTANT = ROOT / "personas" / "builtin" / "assistant.yaml"
MAX_TOKENS = 32  # keeps real-model replies short, so the suite stays fast


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Wire:
    """Payloads the bot sent or edited, in order, as discord.py built them for the API."""

    clock: Callable[[], float]
    sends: list[dict[str, Any]] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)
    updates: list[tuple[float, str]] = field(default_factory=list)  # (clock time, content) of sends and edits
    typing: int = 0

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return self.sends + self.edits

    def install(self, http: Any) -> None:
        original = http.send_message

        async def send_message(channel_id: int, *, params: Any) -> Any:
            # dpytest reads ``channel`` from its caller's frame; keep it visible here.
            channel = sys._getframe(1).f_locals.get("channel")  # noqa: F841
            self.sends.append(dict(params.payload or {}))
            self.updates.append((self.clock(), (params.payload or {}).get("content") or ""))
            return await original(channel_id, params=params)

        http.send_message = send_message

        async def on_edit(channel: Any, message: Any, fields: dict[str, Any]) -> None:
            self.edits.append(dict(fields["params"].payload or {}))
            self.updates.append((self.clock(), (fields["params"].payload or {}).get("content") or ""))

        async def on_typing(channel: Any) -> None:
            self.typing += 1

        callbacks.set_callback(on_edit, "edit_message")
        callbacks.set_callback(on_typing, "send_typing")


@dataclass
class Harness:
    adapter: DiscordAdapter
    wire: Wire
    clock: FakeClock

    @property
    def config(self) -> Any:
        return dpytest.get_config()

    @property
    def bot(self) -> discord.ClientUser:
        return self.adapter.client.user

    @property
    def guild(self) -> discord.Guild:
        return self.config.guilds[0]

    def channel(self, index: int = 0) -> discord.TextChannel:
        return self.config.channels[index]

    def member(self, index: int = 0) -> discord.Member:
        return self.config.members[index]

    def bot_messages(self, channel: Any) -> list[dict[str, Any]]:
        """The bot's messages in ``channel`` as they stand now (after edits), oldest first."""
        return [m for m in sent_log().get(channel.id, []) if int(m["author"]["id"]) == self.bot.id]

    def bot_texts(self, channel: Any) -> list[str]:
        return [m["content"] for m in self.bot_messages(channel)]

    async def say(self, content: str, channel: Any = None, member: Any = None) -> discord.Message:
        """A user message, run to completion (including any reply it triggers)."""
        channel = channel if channel is not None else self.channel()
        member = member if member is not None else self.member()
        message = back.make_message(content, member, channel)
        await self.settle()
        return message

    async def reply_to(self, target: dict[str, Any], content: str, *, resolved: bool = True) -> discord.Message:
        """A Discord reply to ``target`` (a raw message dict); dpytest cannot make these itself."""
        channel = self.channel()
        data = facts.make_message_dict(channel, self.member(), content=content, type=19)
        data["message_reference"] = {"message_id": target["id"], "channel_id": channel.id, "guild_id": self.guild.id}
        if resolved:
            data["referenced_message"] = target
        back.get_state().parse_message_create(data)
        sent_log().setdefault(channel.id, []).append(data)
        await self.settle()
        return back.get_state()._get_message(data["id"])

    async def settle(self) -> None:
        await dpytest.run_all_events()
        await self.adapter.conversation.scheduler.wait_idle()
        await dpytest.run_all_events()

    def make_bot_member(self, name: str = "OtherBot") -> discord.Member:
        user = back.get_state().store_user(facts.make_user_dict(name, "0042", None, bot=True))
        return back.make_member(user, self.guild)

    def make_thread(self, name: str = "side-chat", parent: Any = None) -> discord.Thread:
        """A public thread, created the way the gateway announces one (dpytest has no helper)."""
        parent = parent if parent is not None else self.channel()
        thread_id = facts.make_id()
        back.get_state().parse_thread_create(
            {
                "id": thread_id,
                "parent_id": parent.id,
                "owner_id": self.member().id,
                "name": name,
                "type": discord.ChannelType.public_thread.value,
                "guild_id": self.guild.id,
                "message_count": 0,
                "member_count": 1,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 60,
                    "archive_timestamp": "2024-01-01T00:00:00+00:00",
                    "locked": False,
                },
            }
        )
        return self.guild.get_thread(thread_id)

    async def stored(self, room: RoomRef | Any) -> list[Any]:
        """What the engine's memory holds for a room (or a channel's room)."""
        ref = room if isinstance(room, RoomRef) else room_for(room)
        conversation = self.adapter.conversation
        state = await conversation.room(ref)
        return await conversation.store.messages(state.conversation_id)


def sent_log() -> dict[int, list[dict[str, Any]]]:
    """dpytest's record of every message per channel id, kept current through edits and deletes."""
    return back._cur_config.messages


def short_persona_dir(tmp_path: Path) -> Path:
    """A user folder shadowing the built-in assistant with a small ``max_tokens``; all else is the built-in."""
    folder = tmp_path / "personas"
    folder.mkdir(exist_ok=True)
    text, count = re.subn(r"max_tokens:\s*\d+", f"max_tokens: {MAX_TOKENS}", BUILTIN_ASSISTANT.read_text())
    assert count == 1, "the built-in assistant persona no longer sets max_tokens; update this fixture"
    (folder / "assistant.yaml").write_text(text)
    return folder


@pytest_asyncio.fixture
async def hearth_app(tmp_path: Path, smol_path: Path) -> AsyncIterator[Any]:
    """A started App on the real default model, its data in tmp_path."""
    from bot import App
    from config import HearthConfig
    from tests.conftest import MODELS

    config = HearthConfig.model_validate(
        {
            "model": {
                "models_dir": str(MODELS),
                "n_threads": 2,
                "sampling": {"max_tokens": MAX_TOKENS},
                "state_cache_dir": str(tmp_path / "state_cache"),
            },
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/hearth.db"},
            "personas": {"dir": str(short_persona_dir(tmp_path))},
        }
    )
    application = App.build(config)
    await application.start()
    yield application
    await application.close()


MakeHarness = Callable[..., Awaitable[Harness]]


def _build(conversation: Any, overrides: dict[str, Any]) -> tuple[Harness, discord.Client]:
    from config import DiscordConfig

    config = DiscordConfig(**overrides)
    clock = FakeClock()
    client = make_client(config, intents=discord.Intents.all())  # dpytest needs the member cache
    adapter = DiscordAdapter(conversation, config, client=client, clock=clock)
    return Harness(adapter, Wire(clock), clock), client


async def _start(
    harness: Harness, client: discord.Client, channels: list[str] | None, members: list[str] | None
) -> Harness:
    await client._async_setup_hook()
    dpytest.configure(client, text_channels=channels or ["general", "random"], members=members or ["alice", "bob"])
    harness.wire.install(client.http)
    return harness


async def _cleanup(made: list[Harness]) -> None:
    await dpytest.empty_queue()
    for harness in made:
        for task in list(harness.adapter._replies):
            task.cancel()


@pytest_asyncio.fixture
async def make_harness(hearth_app: Any) -> AsyncIterator[MakeHarness]:
    """``await make_harness(**discord_config)``: the adapter on a dpytest client, on the real engine.

    The guild has the channels ``general`` and ``random`` and the members ``alice`` and ``bob``.
    """
    made: list[Harness] = []

    async def make(channels: list[str] | None = None, members: list[str] | None = None, **overrides: Any) -> Harness:
        harness, client = _build(hearth_app.conversation, overrides)
        made.append(harness)
        return await _start(harness, client, channels, members)

    yield make
    await _cleanup(made)


@pytest_asyncio.fixture
async def harness(make_harness: MakeHarness) -> Harness:
    return await make_harness()


@pytest_asyncio.fixture
async def make_bare_harness() -> AsyncIterator[MakeHarness]:
    """Like ``make_harness`` with no engine behind the adapter: for translation and rendering only."""
    from engine.commands.core import CommandCore

    async def idle() -> None:
        return None

    conversation = SimpleNamespace(commands=CommandCore(), scheduler=SimpleNamespace(wait_idle=idle))
    made: list[Harness] = []

    async def make(channels: list[str] | None = None, members: list[str] | None = None, **overrides: Any) -> Harness:
        harness, client = _build(conversation, overrides)
        made.append(harness)
        return await _start(harness, client, channels, members)

    yield make
    await _cleanup(made)


@pytest_asyncio.fixture
async def bare_harness(make_bare_harness: MakeHarness) -> Harness:
    return await make_bare_harness()


# -- scripted streams (for rendering tests that must control every chunk) ------------------


class PacedStream(ReplyStream):
    """A real ReplyStream whose chunks arrive at given fake-clock times."""

    def __init__(self, clock: FakeClock, pieces: list[tuple[float, str]], error: Exception | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.times = [at for at, _ in pieces]
        for _, text in pieces:
            self.push(TextChunk(text))
        self.push(Failed(error) if error is not None else Done())

    async def __aiter__(self) -> AsyncIterator[str]:
        index = 0
        async for chunk in super().__aiter__():
            self.clock.now = self.times[index]
            index += 1
            yield chunk


def admission_for(stream: ReplyStream | Exception | asyncio.Future, position: int = 0) -> Any:
    """A stand-in for the scheduler's Admission: a ticket whose reply resolves to ``stream``."""
    if isinstance(stream, asyncio.Future):
        future = stream
    else:
        future = asyncio.get_running_loop().create_future()
        if isinstance(stream, Exception):
            future.set_exception(stream)
        else:
            future.set_result(stream)
    return SimpleNamespace(ticket=SimpleNamespace(reply=future), position=position)


# -- a stand-in Interaction (dpytest cannot send interactions) -----------------------------


class FakeResponse:
    def __init__(self, owner: FakeInteraction) -> None:
        self.owner = owner
        self.done = False

    def is_done(self) -> bool:
        return self.done

    async def send_message(self, content: str, *, ephemeral: bool = False, **kwargs: Any) -> None:
        assert not self.done, "an interaction can be responded to only once"
        self.done = True
        self.owner.sent.append(SimpleNamespace(content=content, ephemeral=ephemeral, kind="response", **kwargs))

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        assert not self.done
        self.done = True
        self.owner.deferred = SimpleNamespace(ephemeral=ephemeral, thinking=thinking)


class FakeFollowup:
    def __init__(self, owner: FakeInteraction) -> None:
        self.owner = owner

    async def send(self, content: str, *, ephemeral: bool = False, **kwargs: Any) -> None:
        self.owner.sent.append(SimpleNamespace(content=content, ephemeral=ephemeral, kind="followup", **kwargs))


class FakeInteraction:
    """What the ``/hearth`` callbacks touch on a discord.Interaction: user, channel, response, followup."""

    def __init__(self, user: Any, channel: Any) -> None:
        self.user = user
        self.channel = channel
        self.channel_id = channel.id
        self.guild = getattr(channel, "guild", None)
        self.namespace = SimpleNamespace()
        self.response = FakeResponse(self)
        self.followup = FakeFollowup(self)
        self.sent: list[SimpleNamespace] = []
        self.deferred: SimpleNamespace | None = None

    @property
    def text(self) -> str:
        return "\n".join(item.content for item in self.sent)


@pytest.fixture
def interaction_for() -> Callable[[Any, Any], FakeInteraction]:
    return FakeInteraction


# -- channel webhooks (dpytest has none): discord.py's own webhook code, a recorded wire -------


class WebhookWire(AsyncWebhookAdapter):
    """Discord's webhook endpoints for a dpytest client: listing and creating a channel's webhooks
    (bot HTTP), and executing, editing and deleting webhook messages (discord.py's webhook adapter).

    ``discord.Webhook`` still builds every payload itself, so what is recorded here is what would
    go over the wire. A sent message also appears in the channel as Discord would post it (author:
    the webhook, shown under the ``username`` it was sent with), so replies to it can be made.
    ``refuse`` makes listing and creating fail as they do without Manage Webhooks.
    """

    def __init__(self, client: discord.Client) -> None:
        super().__init__()
        self.client = client
        self.hooks: dict[int, dict[str, Any]] = {}  # webhook id → webhook payload
        self.created: list[dict[str, Any]] = []  # {"channel_id", "name", "avatar"} of each creation
        self.calls: list[SimpleNamespace] = []  # method, webhook_id, payload, params of each message call
        self.refuse = False
        self.refused_usernames: set[str] = set()  # Discord refuses "clyde" and "discord" in a username

    @property
    def sends(self) -> list[SimpleNamespace]:
        return [call for call in self.calls if call.method == "POST"]

    @property
    def edits(self) -> list[SimpleNamespace]:
        return [call for call in self.calls if call.method == "PATCH"]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        http = self.client.http
        monkeypatch.setattr(http, "channel_webhooks", self._channel_webhooks, raising=False)
        monkeypatch.setattr(http, "create_webhook", self._create_webhook, raising=False)
        monkeypatch.setattr(webhook_async, "async_context", ContextVar("hearth_test_webhooks", default=self))

    def _forbidden(self) -> discord.Forbidden:
        return discord.Forbidden(back.FakeRequest(403, "Missing Permissions"), {"code": 50013, "message": "no"})

    async def _channel_webhooks(self, channel_id: int) -> list[dict[str, Any]]:
        if self.refuse:
            raise self._forbidden()
        return [dict(hook) for hook in self.hooks.values() if hook["channel_id"] == str(channel_id)]

    async def _create_webhook(self, channel_id: int, *, name: str, avatar: Any = None, reason: Any = None) -> Any:
        if self.refuse:
            raise self._forbidden()
        self.created.append({"channel_id": channel_id, "name": name, "avatar": avatar})
        hook_id = facts.make_id()
        channel = self.client.get_channel(channel_id)
        self.hooks[hook_id] = {
            "id": str(hook_id),
            "type": 1,
            "channel_id": str(channel_id),
            "guild_id": str(channel.guild.id),
            "name": name,
            "avatar": f"hash{hook_id}" if avatar else None,
            "token": f"token-{hook_id}",
            "application_id": None,
            "user": facts.dict_from_user(self.client.user),
        }
        return dict(self.hooks[hook_id])

    async def request(self, route: Any, session: Any, *, payload: Any = None, params: Any = None, **_: Any) -> Any:
        hook_id = int(route.webhook_id)
        self.calls.append(SimpleNamespace(method=route.method, webhook_id=hook_id, payload=payload, params=params))
        if "/messages/" not in route.path and route.method in ("DELETE", "PATCH"):  # the webhook itself
            self.hooks.pop(hook_id, None)
            return None
        if hook_id not in self.hooks:
            raise discord.NotFound(back.FakeRequest(404, "Unknown Webhook"), {"code": 10015, "message": "gone"})
        channel_id = int((params or {}).get("thread_id") or self.hooks[hook_id]["channel_id"])
        log = sent_log().setdefault(channel_id, [])
        if route.method == "POST":
            if payload["username"] in self.refused_usernames:
                raise discord.HTTPException(back.FakeRequest(400, "Bad Request"), {"code": 50035, "message": "bad"})
            return self._post(hook_id, channel_id, payload, log)
        message_id = int(route.url.rsplit("/", 1)[1])
        data = next(m for m in log if int(m["id"]) == message_id)
        if route.method == "DELETE":
            log.remove(data)
            return None
        data["content"] = payload["content"]
        return dict(data)

    def _post(self, hook_id: int, channel_id: int, payload: dict[str, Any], log: list[Any]) -> dict[str, Any]:
        channel = self.client.get_channel(channel_id) or back.get_state()._get_guild_channel({"channel_id": channel_id})
        data = webhook_message_dict(channel, hook_id, payload["username"], payload.get("content", ""))
        log.append(data)
        back.get_state().parse_message_create(data)  # the gateway echoes it: the adapter must ignore it
        return dict(data)

    def messages(self, channel: Any) -> list[dict[str, Any]]:
        """The webhook messages in ``channel`` as they stand now, oldest first."""
        return [m for m in sent_log().get(channel.id, []) if m.get("webhook_id")]


def webhook_message_dict(channel: Any, hook_id: int, username: str, content: str) -> dict[str, Any]:
    """A message as Discord posts it for a webhook: its author is the webhook, under ``username``."""
    message_id = facts.make_id()
    return {
        "id": str(message_id),
        "channel_id": str(channel.id),
        "guild_id": str(channel.guild.id),
        "author": {"id": str(hook_id), "username": username, "discriminator": "0000", "avatar": None, "bot": True},
        "webhook_id": str(hook_id),
        "content": content,
        "timestamp": discord.utils.snowflake_time(message_id).isoformat(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
    }
