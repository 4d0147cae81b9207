"""hearth's command line and wiring: config → App(engine, memory, personas, adapters).

This is the only place that reads the config file and the environment, and the only
place that turns errors into exit codes: 0 ok, 1 a user-facing problem (one line, no
traceback), 2 bad command-line usage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from config import ConfigErrors, DiscordConfig, HearthConfig, load_config
from engine.catalog import pull
from engine.commands.model_commands import model_details, model_table
from engine.commands.persona_commands import persona_line
from engine.conversation import Conversation
from engine.embedder import EMBEDDER_NAME, resolve_embedding_model
from engine.model_host import ModelHost
from engine.registry import ModelRegistry
from engine.types import PlatformAdapter, RoomRef
from errors import HearthError, UserError
from log_redaction import SecretRedactor, config_secrets
from memory import ConversationKey, MemoryStore
from memory.leases import Leases
from personas import PersonaLibrary, export_card_png

log = logging.getLogger("hearth")
AdapterFactory = tuple[str, Callable[["App"], PlatformAdapter]]  # (platform, build it once the app exists)

ADAPTER_CLOSE_TIMEOUT_S = 2.0  # SIGTERM must end the process within a few seconds, whatever a server does


@dataclass
class App:
    """Every long-lived component, started and closed in order."""

    config: HearthConfig
    store: MemoryStore
    personas: PersonaLibrary
    host: ModelHost
    conversation: Conversation
    adapters: list[PlatformAdapter] = field(default_factory=list)
    leases: Leases | None = None  # the platform accounts this process serves (several processes, one database)
    lost: list[asyncio.Task[None]] = field(default_factory=list)  # adapters closing after a lost lease

    @classmethod
    def build(cls, config: HearthConfig) -> App:
        settings = config.engine_settings()
        store = MemoryStore(config.database.url)
        personas = PersonaLibrary([config.personas.dir])
        host = ModelHost(ModelRegistry(settings.model))
        conversation = Conversation(settings, store, personas, host)
        host.use_pauser(conversation.scheduler)  # a model swap holds turns and waits for the running one
        conversation.scheduler.use_capacity(lambda: host.max_concurrent)  # turns at once: the backend's say
        return cls(config, store, personas, host, conversation)

    async def start(self, model: str | None = None) -> None:
        await self.store.start()
        await self.conversation.prompts.recall.start()  # a bad memory.embedding_model fails here
        await self.host.load(model or self.config.model.default)
        await self.conversation.start()

    async def close(self) -> None:
        for adapter in reversed(self.adapters):
            try:
                async with asyncio.timeout(ADAPTER_CLOSE_TIMEOUT_S):
                    await adapter.close()
            except TimeoutError:
                log.warning("%s did not close in %.0f s; leaving it", type(adapter).__name__, ADAPTER_CLOSE_TIMEOUT_S)
            except Exception as exc:
                log.warning("closing %s failed: %s", type(adapter).__name__, exc)
        if self.leases is not None:  # after the adapters: nobody else may serve an account we still do
            await self.leases.close()
        await self.conversation.close()
        await self.host.close()
        await self.conversation.prompts.recall.close()
        await self.store.close()


# -- subcommands ---------------------------------------------------------------------------


async def cmd_chat(args: argparse.Namespace, config: HearthConfig) -> int:
    from adapters.console import ConsoleAdapter

    app = App.build(config)
    try:
        await app.start(args.model)
        console = ConsoleAdapter(app.conversation, room_id=args.room)
        if args.persona:
            app.personas.get(args.persona)  # fail early on an unknown name
            room = await app.conversation.room(console.room)
            await app.store.update_room_settings(room.conversation_id, persona=args.persona.lower())
        await console.run()
    finally:
        await app.close()
    return 0


async def cmd_run(args: argparse.Namespace, config: HearthConfig, redactor: SecretRedactor | None = None) -> int:
    """Start the engine and every enabled adapter, then run until SIGINT or SIGTERM.

    A signal cancels whatever is under way, start-up included: a homeserver that never answers
    must not hold the process for nio's retries. Closing each adapter is bounded as well.
    """
    adapters = _enabled_adapters(config)
    if not adapters:
        raise UserError("no adapter is enabled: set discord.enabled or matrix.enabled in the config")
    app = App.build(config)
    serving = asyncio.create_task(_serve(app, adapters, redactor), name="hearth-run")
    signalled = False

    def on_signal() -> None:
        nonlocal signalled
        if not signalled:
            log.info("shutting down")
        signalled = True
        serving.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        await serving
    except asyncio.CancelledError:
        if not signalled:
            raise
    finally:
        await app.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


async def _serve(app: App, adapters: list[AdapterFactory], redactor: SecretRedactor | None) -> None:
    """Start everything, then wait to be cancelled."""
    await app.start()
    app.leases = Leases(app.config.database.url, on_lost=lambda name: _lost_account(app, name))
    await app.leases.start()
    for platform, make in adapters:
        if not await claim_account(app.leases, app.config, platform):
            continue
        adapter = make(app)
        app.adapters.append(adapter)  # appended before start(), so close() ends a start cut short
        if redactor is not None:
            redactor.watch(_live_token(adapter))
        await adapter.start()
    if not app.adapters:
        raise UserError("every enabled adapter is served by another process; nothing left to run here")
    log.info("hearth is running with %s; Ctrl-C stops it", ", ".join(type(a).__name__ for a in app.adapters))
    await asyncio.Event().wait()


def _live_token(adapter: PlatformAdapter) -> Callable[[], str | None]:
    """The access token an adapter's client holds now (a Matrix password login makes a new one)."""

    def token() -> str | None:
        value = getattr(adapter.client, "access_token", None)
        return value if isinstance(value, str) else None

    return token


def discord_account(token: str) -> str:
    """The bot's user id, which a Discord token starts with (base64); a hash if it does not parse.
    Never the token itself: lease names are logged and stored."""
    head = token.split(".", 1)[0]
    try:
        user_id = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode("ascii")
    except (ValueError, UnicodeError):
        user_id = ""
    return user_id if user_id.isdigit() else "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def discord_shards(config: DiscordConfig) -> list[int]:
    """The shards a process would serve: its ``shard_ids``, all of a numeric ``shard_count``, or
    shard 0 for one connection (and for ``auto``, whose count only Discord knows)."""
    if config.shard_ids is not None:
        return list(config.shard_ids)
    return list(range(config.shard_count)) if isinstance(config.shard_count, int) else [0]


async def claim_account(leases: Leases, config: HearthConfig, platform: str) -> bool:
    """Lease the platform account before its adapter starts; say so in one line when another process has it.

    For Discord each shard is its own lease, and the process keeps the shards it got.
    """
    if platform == "matrix":
        if await leases.acquire(f"matrix:{config.matrix.user_id}"):
            return True
        log.warning("matrix account %s is served by another process; leaving Matrix off", config.matrix.user_id)
        return False
    token = config.discord.token.get_secret_value() if config.discord.token else ""
    account = discord_account(token)
    wanted = discord_shards(config.discord)
    got = [shard for shard in wanted if await leases.acquire(f"discord:{account}:shard:{shard}")]
    taken = ", ".join(str(shard) for shard in wanted if shard not in got)
    if not got:
        log.warning("discord account %s shard %s is served by another process; leaving Discord off", account, taken)
        return False
    if taken:
        log.warning("discord account %s shard %s is served by another process; serving the others here", account, taken)
        config.discord = config.discord.model_copy(update={"shard_ids": got})
    return True


def _lost_account(app: App, name: str) -> None:
    """A lease slipped away (database gone, or a stall let it lapse): stop serving that platform."""
    platform = name.split(":", 1)[0]
    for adapter in app.adapters:
        if type(adapter).__name__.lower().startswith(platform):
            log.error("%s: lost the lease for %s; closing it so that two processes never answer", platform, name)
            app.lost.append(asyncio.create_task(adapter.close(), name=f"close-{platform}"))


def _enabled_adapters(config: HearthConfig) -> list[AdapterFactory]:
    factories: list[AdapterFactory] = []
    if config.discord.enabled:
        from adapters.discord_adapter import DiscordAdapter

        factories.append(("discord", lambda app: DiscordAdapter(app.conversation, app.config.discord)))
    if config.matrix.enabled:
        from adapters.matrix_adapter import MatrixAdapter
        from engine.session_state import StoredSessionState

        def session(app: App) -> StoredSessionState:  # device and sync token, in the database
            return StoredSessionState(app.store, "matrix", app.config.matrix.user_id)

        factories.append(("matrix", lambda app: MatrixAdapter(app.conversation, session(app), app.config.matrix)))
    return factories


def check_references(config: HearthConfig) -> list[str]:
    """Problems with what the config points at: model files and personas."""
    problems: list[str] = []
    registry = ModelRegistry(config.engine_settings().model)
    try:
        registry.check_files(registry.resolve(config.model.default))
    except HearthError as exc:
        problems.append(f"model.default: {exc}")
    for index, override in enumerate(config.model.models):
        try:
            registry.check_files(registry.resolve(override.name))  # a server is asked by check_endpoints
        except HearthError as exc:
            key = "tokenizer" if override.endpoint else "path"
            problems.append(f"model.models.{index}.{key}: {exc}")
    try:
        resolve_embedding_model(config.memory.embedding_model, config.model.models_dir)
    except HearthError as exc:
        problems.append(f"memory.embedding_model: {exc}")
    personas = PersonaLibrary([config.personas.dir])
    problems.extend(f"personas: {error}" for error in personas.errors)
    for name in personas.names():
        preferred = personas.get(name).model
        if preferred:
            try:
                registry.check_files(registry.resolve(preferred))
            except HearthError as exc:
                problems.append(f"personas: {name} prefers model {preferred!r}: {exc}")
    try:
        personas.get(config.personas.default)
    except HearthError as exc:
        problems.append(f"personas.default: {exc}")
    return problems


async def check_endpoints(config: HearthConfig) -> list[str]:
    """Ask every configured server whether it answers; print what the ones that do serve."""
    from engine.remote_backend import probe_endpoint

    problems = []
    for index, configured in enumerate(config.engine_settings().model.models):
        if configured.remote is None:
            continue
        try:
            print(f"model.models.{index}.endpoint: {await probe_endpoint(configured.remote)}")
        except HearthError as exc:
            problems.append(f"model.models.{index}.endpoint: {exc}")
    return problems


async def cmd_check(args: argparse.Namespace, config: HearthConfig) -> int:
    problems = check_references(config) + await check_endpoints(config)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"ok: {args.config or 'built-in defaults'} is valid")
    return 0


async def cmd_models(args: argparse.Namespace, config: HearthConfig) -> int:
    registry = ModelRegistry(config.engine_settings().model)
    if args.models_command == "list":
        print(model_table(registry, None))
    elif args.models_command == "info":
        print(model_details(registry, registry.resolve(args.name)))
    elif args.models_command == "pull":
        if args.name.lower() == EMBEDDER_NAME:  # the recall embedder: converted to GGUF on the way in
            from engine.embedder_pull import pull_embedder

            await asyncio.to_thread(pull_embedder, config.model.models_dir, print)
        else:
            await asyncio.to_thread(pull, args.name, config.model.models_dir, print)
    return 0


async def cmd_personas(args: argparse.Namespace, config: HearthConfig) -> int:
    library = PersonaLibrary([config.personas.dir])
    if args.personas_command == "list":
        for name in library.names():
            print(persona_line(name, library.get(name)))
        for error in library.errors:
            print(f"! {error}")
    elif args.personas_command == "show":
        persona = library.get(args.name)
        print(json.dumps(persona.model_dump(mode="json", exclude_defaults=True), indent=2, ensure_ascii=False))
    elif args.personas_command == "import":
        persona = library.import_file(Path(args.file), config.personas.dir)
        print(f"imported {persona.name} into {config.personas.dir}")
    elif args.personas_command == "export":
        persona = library.get(args.name)
        if args.png:
            path = export_card_png(persona, library.card_lorebook(persona), args.png)
            print(f"wrote {persona.name}'s card to {path}")
        else:
            sys.stdout.write(library.export_card(persona, png=False).decode("utf-8"))
    return 0


async def cmd_memory(args: argparse.Namespace, config: HearthConfig) -> int:
    store = MemoryStore(config.database.url)
    await store.start()
    try:
        platform, _, room_id = args.room.partition(":") if ":" in args.room else ("console", "", args.room)
        conversation_id = await store.find_conversation(ConversationKey(platform, room_id))
        if conversation_id is None:
            raise UserError(f"no stored conversation for room {args.room!r}")
        if args.memory_command == "export":
            print(json.dumps(await store.export(conversation_id), indent=2, ensure_ascii=False))
        else:
            summary = await store.summary(conversation_id)
            count = await store.count_messages(conversation_id)
            print(f"room: {RoomRef(platform, room_id).label}\nstored turns: {count}")
            print(f"summary: {summary.text if summary else '(none yet)'}")
    finally:
        await store.close()
    return 0


# -- argument parsing ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted at every level (`bot.py models list --config X` and
    # `bot.py --config X models list`); SUPPRESS keeps a deeper level from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="YAML config file (default: built-in defaults)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="verbose logs, with tracebacks")
    parser = argparse.ArgumentParser(
        prog="bot.py", description="hearth: a local-LLM bot for Discord and Matrix", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def leaf(group, name: str, **kwargs) -> argparse.ArgumentParser:
        return group.add_parser(name, parents=[common], **kwargs)

    chat = leaf(sub, "chat", help="chat in the terminal")
    chat.add_argument("--persona", help="persona for this room")
    chat.add_argument("--model", help="model name or path to a .gguf file")
    chat.add_argument("--room", default="console", help="room id; memory is kept per room")
    leaf(sub, "run", help="run every adapter enabled in the config")
    leaf(sub, "check", help="validate the config and what it refers to")

    models = leaf(sub, "models", help="list, inspect or fetch models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    leaf(models_sub, "list", help="known models, without loading them")
    leaf(models_sub, "info", help="details of one model").add_argument("name")
    leaf(models_sub, "pull", help=f"fetch a catalog model, e.g. 'default', or '{EMBEDDER_NAME}'").add_argument("name")

    personas = leaf(sub, "personas", help="list, show, import or export personas")
    personas_sub = personas.add_subparsers(dest="personas_command", required=True)
    leaf(personas_sub, "list")
    leaf(personas_sub, "show").add_argument("name")
    leaf(personas_sub, "import", help="a persona YAML, or a character card (PNG, JSON or CHARX)").add_argument("file")
    export = leaf(personas_sub, "export", help="a persona as a character card: V2 JSON on stdout, or --png FILE")
    export.add_argument("name")
    export.add_argument("--png", metavar="FILE", help="write a PNG card (V2 'chara' and V3 'ccv3' chunks) to FILE")

    memory = leaf(sub, "memory", help="inspect a room's stored memory")
    memory_sub = memory.add_subparsers(dest="memory_command", required=True)
    for name in ("show", "export"):
        leaf(memory_sub, name).add_argument("--room", required=True, help="room id, or PLATFORM:ROOM")
    return parser


COMMANDS = {
    "chat": cmd_chat,
    "run": cmd_run,
    "check": cmd_check,
    "models": cmd_models,
    "personas": cmd_personas,
    "memory": cmd_memory,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.config = getattr(args, "config", None)
    args.debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        redactor = SecretRedactor(config_secrets(config))
        redactor.install(logging.getLogger())
        if not args.debug:
            level = getattr(logging, config.logging.level)
            logging.getLogger().setLevel(level if args.command == "run" else max(logging.WARNING, level))
            logging.getLogger("httpx").setLevel(max(logging.WARNING, level))  # not a line per request to a server
        if args.command == "run":
            return asyncio.run(cmd_run(args, config, redactor))
        return asyncio.run(COMMANDS[args.command](args, config))
    except ConfigErrors as exc:
        for error in exc.errors:
            print(str(error), file=sys.stderr)
        return 1
    except HearthError as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.debug("crashed", exc_info=True)
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
