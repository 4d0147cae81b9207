"""Room-level commands: help, reset, settings, stats, stop, regenerate."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from engine.cast import GROUP_SETTINGS, group_options, parse_group_setting
from engine.commands.core import Command, CommandContext, CommandResult, Right
from engine.conversation import TRIGGER_MODES
from engine.sampling import SAMPLING_KEYS, parse_sampling_value
from errors import CheckFailure, CommandError

if TYPE_CHECKING:
    from engine.conversation import Conversation


def commands(conv: Conversation) -> list[Command]:
    async def help_command(ctx: CommandContext, args: list[str]) -> str:
        return conv.commands.help_text(ctx)

    async def settings_show(ctx: CommandContext, args: list[str]) -> str:
        turn = await conv.room_turn(ctx.room)
        settings, persona = turn.settings, turn.persona
        sampling = ", ".join(f"{k}={v}" for k, v in sorted(settings.sampling.items())) or "model defaults"
        lines = [
            f"persona: {persona.name}",
            f"trigger: {settings.trigger_mode or 'mention'} (one of {', '.join(TRIGGER_MODES)})",
            f"sampling overrides: {sampling}",
        ]
        if turn.is_group:
            group = group_options(settings)
            lines[0] = f"cast: {', '.join(p.name for p in turn.personas)}"
            lines.append(f"group: mode {group.mode}, replies {group.replies}, chain {group.chain}")
        return "\n".join(lines)

    async def settings_set(ctx: CommandContext, args: list[str]) -> str:
        key, raw = args[0].lower(), args[1]
        room = await conv.room(ctx.room)
        if key in ("trigger", "trigger_mode"):
            if raw not in TRIGGER_MODES:
                raise CommandError(f"trigger must be one of {', '.join(TRIGGER_MODES)}, not {raw!r}")
            await conv.store.update_room_settings(room.conversation_id, trigger_mode=raw)
            return f"trigger set to {raw}"
        if key in GROUP_SETTINGS:
            value = parse_group_setting(key, raw)
            extra = dict((await conv.store.room_settings(room.conversation_id)).extra)
            extra[key] = value
            await conv.store.update_room_settings(room.conversation_id, extra=extra)
            return f"{key} set to {value}"
        current = dict((await conv.store.room_settings(room.conversation_id)).sampling)
        if raw.lower() in ("default", "reset"):
            current.pop(key, None)
        else:
            current[key] = parse_sampling_value(key, raw)
            conv.host.registry.settings.sampling.merged(current).validated()
        await conv.store.update_room_settings(room.conversation_id, sampling=current)
        return f"{key} set to {current.get(key, 'the default')}"

    async def stats(ctx: CommandContext, args: list[str]) -> str:
        host = conv.host
        uptime = time.monotonic() - conv.started_at
        rate = conv.generated_tokens / conv.generation_seconds if conv.generation_seconds else 0.0
        last = conv.last_stats
        lines = [
            f"model: {host.entry.name if host.entry else 'none'}",
            f"speed: {rate:.1f} tokens/s average"
            + (f", last reply {last.tokens_per_s:.1f} tokens/s, ttft {last.ttft_s:.2f} s" if last else ""),
            f"queue: {conv.scheduler.depth} waiting, {len(conv.scheduler.running_rooms)} of "
            f"{host.max_concurrent} rooms generating now",
            f"uptime: {int(uptime // 3600)}h {int(uptime % 3600 // 60)}m {int(uptime % 60)}s",
            *(host.backend.details if host.backend else ()),  # a server's endpoint and health
        ]
        return "\n".join(lines)

    async def stop(ctx: CommandContext, args: list[str]) -> str:
        requesters = conv.scheduler.requesters(ctx.room.label)
        if requesters and ctx.author.id not in requesters and not ctx.author.manages_room:
            raise CheckFailure("this reply answers someone else: stopping it needs a room manager")
        stopped = conv.scheduler.cancel(ctx.room.label)
        return "stopped" if stopped else "nothing to stop here"

    async def regenerate(ctx: CommandContext, args: list[str]) -> CommandResult:
        room = await conv.room(ctx.room)
        recent = await conv.store.messages(room.conversation_id, last=2)
        if not recent or recent[-1].role != "assistant":
            raise CommandError("there is no bot reply to regenerate here")
        asked_by = recent[0].author_id if len(recent) == 2 and recent[0].role == "user" else None
        if asked_by != ctx.author.id and not ctx.author.manages_room:
            raise CheckFailure("that reply answered someone else: regenerating it needs a room manager")
        await conv.store.delete_message_by_id(room.conversation_id, recent[-1].id)
        admission = conv.scheduler.request(ctx.room.label)
        conv.plan_speaker(ctx.room, recent[-1].author_name)  # in a cast, the same character writes it again
        admission.ticket.requested_by.add(ctx.author.id)
        return CommandResult("regenerating…", reply=admission)

    setting_keys = "trigger|" + "|".join(GROUP_SETTINGS) + "|" + "|".join(SAMPLING_KEYS)
    return [
        Command(("help",), help_command, "list the commands"),
        Command(("settings", "show"), settings_show, "the room's trigger mode and sampling", max_args=0),
        Command(
            ("settings", "set"),
            settings_set,
            "change the room's trigger mode, group settings or a sampling value ('default' resets it)",
            f"{setting_keys} VALUE",
            right=Right.ROOM_MANAGER,
            min_args=2,
            max_args=2,
        ),
        Command(("stats",), stats, "model, speed, queue and uptime", max_args=0),
        Command(
            ("stop",), stop, "stop the reply being written in this room (a room manager's, if it answers others)",
            max_args=0,
        ),
        Command(
            ("regenerate",), regenerate, "write the last reply again (a room manager's, if it answered others)",
            max_args=0,
        ),
    ]
