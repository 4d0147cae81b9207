"""The config file: YAML, ``${VAR}`` from the environment, validated once by pydantic.

This is the edge. It turns the file into the engine's typed settings; nothing below
``bot.py`` reads YAML or the environment. Secrets are ``SecretStr`` so they never
print, and every error names its dotted key path (``model.n_ctx: must be >= 256``).
"""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from engine.sampling import DEFAULT_REPEAT_PENALTY, SAMPLING_KEYS, SamplingParams
from engine.settings import (
    ConfiguredModel,
    EngineSettings,
    LimitSettings,
    MemorySettings,
    ModelOptions,
    ModelSettings,
    RemoteEndpoint,
)
from errors import ConfigError
from sampling_limits import range_problem, sampling_field

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MODEL_OPTION_KEYS = frozenset(f.name for f in fields(ModelOptions))  # ``model.*`` keys that are load options


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(_Section):
    temperature: float = sampling_field("temperature", 0.7)
    top_p: float = sampling_field("top_p", 0.9)
    top_k: int = sampling_field("top_k", 40)
    min_p: float = sampling_field("min_p", 0.05)
    repeat_penalty: float = sampling_field("repeat_penalty", DEFAULT_REPEAT_PENALTY)
    max_tokens: int = sampling_field("max_tokens", 256)
    stop: list[str] = Field(default_factory=list)


class ModelOverride(_Section):
    """A model entry: a local GGUF (``path``) or an OpenAI-compatible server (``endpoint``)."""

    name: str = Field(min_length=1)
    path: Path | None = None
    endpoint: str | None = Field(None, pattern=r"^https?://\S+$")
    api_key: SecretStr | None = None
    model: str | None = None  # the model's name on the server
    tokenizer: Path | None = None  # a local GGUF whose vocab gives exact counts for a server
    max_concurrent: int = Field(1, ge=1, le=256)
    n_ctx: int | None = Field(None, ge=256)
    chat_format: Literal["chatml", "gemma"] | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _file_or_server(self) -> ModelOverride:
        if (self.path is None) == (self.endpoint is None):
            raise ValueError("path: give exactly one of path (a GGUF file) or endpoint (a server)")
        if self.endpoint is None and (self.api_key or self.model or self.tokenizer):
            raise ValueError("endpoint: api_key, model and tokenizer apply only to an endpoint entry")
        return self

    def configured(self) -> ConfiguredModel:
        remote = None
        if self.endpoint is not None:
            key = self.api_key.get_secret_value() if self.api_key else None
            url = self.endpoint.rstrip("/")
            remote = RemoteEndpoint(url, key or None, self.model, self.tokenizer, self.max_concurrent)
        return ConfiguredModel(self.name, self.path, self.n_ctx, self.chat_format, dict(self.sampling), remote)

    @field_validator("sampling")
    @classmethod
    def _sampling_in_range(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Checked here, so a bad override fails at start rather than at every turn."""
        for key, item in value.items():
            if key not in SAMPLING_KEYS:
                raise ValueError(f"{key}: unknown sampling setting; known: {', '.join(SAMPLING_KEYS)}")
            problem = range_problem(key, item)
            if problem:
                raise ValueError(f"{key}: {problem} (got {item!r})")
        return value


class ModelConfig(_Section):
    default: str = "smollm2-135m-instruct"
    models_dir: Path = Path("models")
    n_ctx: int = Field(2048, ge=256, le=131072)
    n_threads: int | None = Field(None, ge=1)
    n_threads_batch: int | None = Field(None, ge=1)
    n_batch: int = Field(512, ge=32)
    n_ubatch: int = Field(512, ge=32)
    n_gpu_layers: int = Field(0, ge=-1)
    flash_attn: bool = False  # see README "Performance": small warm batches are faster without it
    flash_prefill: bool = True  # long cold prompts are evaluated with flash attention all the same
    flash_prefill_min_tokens: int = Field(128, ge=1)
    chat_format: Literal["chatml", "gemma"] | None = None
    state_cache_mb: int = Field(512, ge=0)
    # Evaluated room states spill here, and are written here at shutdown, so the first reply after a
    # restart is warm (bench.rooms restart_ttft_s). null: RAM only.
    state_cache_dir: Path | None = Path("data/state_cache")
    state_cache_disk_mb: int = Field(2048, ge=1)
    # The most rooms generating at once, fewer if their KV cache would not fit in free RAM
    # (README "Many rooms at once"); 1: one room at a time.
    parallel: int = Field(4, ge=1, le=64)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    models: list[ModelOverride] = Field(default_factory=list)


class DatabaseConfig(_Section):
    url: str = "sqlite+aiosqlite:///data/hearth.db"


class PersonasConfig(_Section):
    dir: Path = Path("data/personas")
    default: str = "assistant"


class MemoryConfig(_Section):
    summarize_at: float = Field(0.75, gt=0.1, le=1.0)
    keep_recent_turns: int = Field(6, ge=1)
    summary_max_tokens: int = Field(200, ge=16, le=2048)
    recall_tokens: int = Field(150, ge=0, le=4096)
    # where recall looks: this room only (a thread is its own room), the room with its threads, or
    # every room of the same platform. Nothing crosses rooms unless this says so.
    recall_scope: Literal["room", "channel", "platform"] = "room"
    # the embedder for vector recall: "all-minilm-l6-v2" (bundled), a GGUF path or file name in
    # model.models_dir, or "off" for full-text recall only
    embedding_model: str = Field("all-minilm-l6-v2", max_length=4096)


class EngineConfig(_Section):
    max_queue: int = Field(32, ge=1)
    generation_timeout_s: float = Field(180, gt=0)
    persona_models: bool = True


class LimitsConfig(_Section):
    """Per-user and per-room rate limits; 0 turns a limit off. Operators are exempt."""

    user_messages_per_minute: float = Field(20, ge=0)
    user_burst: int = Field(8, ge=1)
    room_replies_per_minute: float = Field(30, ge=0)


class DiscordConfig(_Section):
    enabled: bool = False
    token: SecretStr | None = None
    admin_users: list[str] = Field(default_factory=list)
    admin_roles: list[str] = Field(default_factory=list)
    allow_dms: bool = True
    answer_channels: list[str] = Field(default_factory=list)
    ignore_bots: bool = True
    edit_interval: float = Field(1.0, ge=0.2)
    max_edits: int = Field(60, ge=1)
    dev_guild: str | None = None
    shard_count: int | Literal["auto"] | None = None
    # The shards this process serves, when several processes split one bot (each shard is leased).
    shard_ids: list[int] | None = None

    @model_validator(mode="after")
    def _token_when_enabled(self) -> DiscordConfig:
        if self.enabled and not (self.token and self.token.get_secret_value()):
            raise ValueError("token: required when discord is enabled")
        return self

    @model_validator(mode="after")
    def _shards_within_count(self) -> DiscordConfig:
        if isinstance(self.shard_count, int) and self.shard_count < 1:
            raise ValueError(f"shard_count: must be >= 1 (got {self.shard_count})")
        if self.shard_ids is None:
            return self
        if not isinstance(self.shard_count, int):
            raise ValueError("shard_ids: needs a numeric shard_count (the total over all processes)")
        if not self.shard_ids:
            raise ValueError("shard_ids: must name at least one shard (leave it out to serve them all)")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("shard_ids: a shard is listed twice")
        outside = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
        if outside:
            last = self.shard_count - 1
            raise ValueError(f"shard_ids: {outside[0]} is not a shard of {self.shard_count} (0 to {last})")
        return self


class MatrixConfig(_Section):
    enabled: bool = False
    homeserver: str = "http://localhost:8008"
    user_id: str = ""
    password: SecretStr | None = None
    access_token: SecretStr | None = None
    device_name: str = "hearth"
    command_prefix: str = "!hearth"
    admins: list[str] = Field(default_factory=list)
    admin_power_level: int = 50
    allowed_inviters: list[str] = Field(default_factory=list)
    edit_interval: float = Field(1.0, ge=0.2)
    max_edits: int = Field(60, ge=1)
    msgtype: Literal["m.text", "m.notice"] = "m.text"
    encryption: bool = False
    store_dir: str = "data/matrix"
    max_attachment_kb: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _credentials_when_enabled(self) -> MatrixConfig:
        if self.enabled:
            if not self.user_id:
                raise ValueError("user_id: required when matrix is enabled")
            if not (self.password or self.access_token):
                raise ValueError("password: one of password or access_token is required when matrix is enabled")
        return self


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class HearthConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    personas: PersonasConfig = Field(default_factory=PersonasConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    discord: DiscordConfig = Field(default_factory=DiscordConfig)
    matrix: MatrixConfig = Field(default_factory=MatrixConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def engine_settings(self) -> EngineSettings:
        m = self.model
        sampling = SamplingParams(**{**m.sampling.model_dump(), "stop": tuple(m.sampling.stop)})
        return EngineSettings(
            default_persona=self.personas.default,
            user_persona_dir=self.personas.dir,
            max_queue=self.engine.max_queue,
            generation_timeout_s=self.engine.generation_timeout_s,
            persona_models=self.engine.persona_models,
            model=ModelSettings(
                default=m.default,
                models_dir=m.models_dir,
                options=ModelOptions(**m.model_dump(include=set(MODEL_OPTION_KEYS))),
                sampling=sampling,
                models=tuple(o.configured() for o in m.models),
            ),
            memory=MemorySettings(**self.memory.model_dump()),
            limits=LimitSettings(**self.limits.model_dump()),
        )


class ConfigErrors(ConfigError):
    """Several config problems at once; ``errors`` holds each one."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("", "\n".join(str(e) for e in errors))


def expand_env(value: Any, path: str, env: dict[str, str], missing: list[ConfigError]) -> Any:
    """Replace ``${VAR}`` in every string; record a dotted-path error for each unset variable."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}.{i}", env, missing) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append(ConfigError(path, f"environment variable {name} is not set"))
                return ""
            return env[name]

        return ENV_PATTERN.sub(substitute, value)
    return value


_FRIENDLY = {
    "extra_forbidden": lambda e: "unknown key",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}",
    "less_than_equal": lambda e: f"must be <= {e['ctx']['le']}",
    "less_than": lambda e: f"must be < {e['ctx']['lt']}",
    "missing": lambda e: "is required",
}


def _format_validation(exc: ValidationError) -> list[ConfigError]:
    errors = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"])
        message = _FRIENDLY.get(error["type"], lambda e: e["msg"])(error)
        if error["type"] == "value_error":
            inner = str(error["msg"]).removeprefix("Value error, ")
            key, _, rest = inner.partition(": ")
            path, message = (f"{path}.{key}" if path else key, rest) if rest else (path, inner)
        elif error["type"] not in ("missing", "extra_forbidden") and "input" in error:
            shown = error["input"]
            if not isinstance(shown, dict | list) and not _is_secret(path):
                message += f" (got {shown!r})"
        errors.append(ConfigError(path, message))
    return errors


def _is_secret(path: str) -> bool:
    return path.rsplit(".", 1)[-1] in ("token", "password", "access_token", "api_key")


class _UniqueKeyLoader(yaml.SafeLoader):
    """Duplicate keys in a config file are a mistake, not a silent override."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> HearthConfig:
    """Read and validate; raise ConfigErrors listing every problem found."""
    env = dict(os.environ) if env is None else env
    if path is None:
        return HearthConfig()
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigErrors([ConfigError("", f"config file {path} does not exist")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([ConfigError("", f"cannot read {path}: {exc}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigErrors([ConfigError("", f"{where}: invalid YAML: {problem}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigErrors([ConfigError("", f"{path}: the top level must be a mapping of sections")])
    missing: list[ConfigError] = []
    expanded = expand_env(raw, "", env, missing)
    try:
        config = HearthConfig.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigErrors(missing + _format_validation(exc)) from None
    if missing:
        raise ConfigErrors(missing)
    return config
