"""A real Synapse homeserver on loopback, for the Matrix adapter tests.

Synapse runs as a subprocess of the installed `matrix-synapse` package with a SQLite database in a temp
dir, only a plain-HTTP client listener on 127.0.0.1, no federation and rate limits raised out of reach.
It can be stopped and started again on the same port and data, to test reconnects. No pytest here:
errors are `SynapseError`, which the fixtures turn into test failures.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVER_NAME = "localhost"
SHARED_SECRET = "hearth-tests-shared-secret"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

_UNLIMITED = {"per_second": 10_000, "burst_count": 100_000}
# Every rate limiter Synapse knows (unknown keys are ignored by older versions).
RATE_LIMITS: dict[str, Any] = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_registration_token_validity": _UNLIMITED,
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_admin_redaction": _UNLIMITED,
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_3pid_validation": _UNLIMITED,
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_third_party_invite": _UNLIMITED,
    "rc_room_creation": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_media_create": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
    "rc_delayed_event_mgmt": _UNLIMITED,
    "rc_reports": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
    "rc_federation": {"window_size": 1000, "sleep_limit": 10_000, "sleep_delay": 0, "reject_limit": 10_000},
}


@dataclass(frozen=True)
class MatrixAccount:
    """A registered user, for code that logs in by itself (the bot under test)."""

    localpart: str
    user_id: str
    password: str
    access_token: str
    device_id: str


class SynapseError(RuntimeError):
    """The homeserver could not be set up, started or asked something."""


def synapse_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("synapse") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGTERM if pytest dies without tearing down (Linux), so no server lingers."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class SynapseServer:
    """One homeserver: `setup()` once, then `start()`/`stop()` as often as needed (same port, same data)."""

    def __init__(self, root: Path, server_name: str = SERVER_NAME, port: int | None = None) -> None:
        self.root = Path(root)
        self.server_name = server_name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.root / "homeserver.yaml"
        self.log_path = self.root / "homeserver.log"
        self.console_path = self.root / "console.log"
        self.shared_secret = SHARED_SECRET
        self.start_seconds: list[float] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._console = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Generate the config and signing key with Synapse itself, then make it test-friendly."""
        self.root.mkdir(parents=True, exist_ok=True)
        generate = [
            sys.executable, "-m", "synapse.app.homeserver",
            "--server-name", self.server_name,
            "--config-path", str(self.config_path),
            "--config-directory", str(self.root),
            "--data-directory", str(self.root),
            "--report-stats=no",
            "--generate-config",
        ]  # fmt: skip
        done = subprocess.run(generate, capture_output=True, text=True, cwd=self.root, timeout=120)
        if done.returncode != 0 or not self.config_path.is_file():
            raise SynapseError(f"synapse --generate-config failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        config = yaml.safe_load(self.config_path.read_text())
        config.update(self._overrides())
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._quiet_logging(config.get("log_config"))

    def _overrides(self) -> dict[str, Any]:
        return {
            "server_name": self.server_name,
            "public_baseurl": f"{self.url}/",
            "pid_file": str(self.root / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(self.root / "homeserver.db")}},
            "media_store_path": str(self.root / "media_store"),
            "signing_key_path": str(self.root / f"{self.server_name}.signing.key"),
            "registration_shared_secret": self.shared_secret,
            "enable_registration": False,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            "enable_metrics": False,
            "require_auth_for_profile_requests": False,
            "bcrypt_rounds": 4,  # registering or logging in takes ms, not 0.3 s
            **RATE_LIMITS,
        }

    def _quiet_logging(self, log_config: str | None) -> None:
        """Log to homeserver.log only, and keep SQL chatter out of it."""
        if not log_config or not Path(log_config).is_file():
            return
        config = yaml.safe_load(Path(log_config).read_text())
        for handler in config.get("handlers", {}).values():
            if "filename" in handler:
                handler["filename"] = str(self.log_path)
        config.setdefault("loggers", {})["synapse.storage.SQL"] = {"level": "WARNING"}
        # Straight to the file, not through the 5 s buffer, so log_tail() shows the latest lines.
        config.setdefault("root", {})["handlers"] = ["file"]
        Path(log_config).write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server (a no-op if it already runs) and wait until the client API answers."""
        if self.running:
            return
        began = time.monotonic()
        self._console = open(self.console_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(self.config_path)],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )
        deadline = began + timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._close_console()
                raise SynapseError(f"synapse exited with code {code} while starting:\n{self.log_tail()}")
            if self._answers():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise SynapseError(f"synapse did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)
        self.start_seconds.append(time.monotonic() - began)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL if it lingers; a no-op if it is not running."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._close_console()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, lines: int = 60) -> str:
        """The end of the server log and of its console output, for failure messages."""
        parts = []
        for path in (self.log_path, self.console_path):
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no synapse log yet)"

    # -- HTTP ----------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
        """A JSON request against the homeserver; raises SynapseError on an HTTP error."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise SynapseError(f"{method} {path} -> {error.code}: {detail}") from error

    def register(self, localpart: str, password: str, admin: bool = False) -> tuple[str, str, str]:
        """Create a user with the shared-secret admin API; returns (user_id, access_token, device_id)."""
        path = "/_synapse/admin/v1/register"
        nonce = self.request("GET", path)["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode()]))
        mac.update(b"\x00admin" if admin else b"\x00notadmin")
        reply = self.request(
            "POST",
            path,
            {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()},
        )
        return reply["user_id"], reply["access_token"], reply["device_id"]

    def register_account(self, prefix: str = "user", admin: bool = False) -> MatrixAccount:
        """Register a fresh user with a unique localpart (`prefix-<random>`) and password."""
        localpart = f"{prefix.lower()}-{uuid.uuid4().hex[:10]}"
        password = f"pw-{localpart}"
        user_id, token, device_id = self.register(localpart, password, admin=admin)
        return MatrixAccount(localpart, user_id, password, token, device_id)

    def login(self, user_id: str, password: str, device_id: str | None = None) -> tuple[str, str]:
        """Password login (a new device unless one is named); returns (access_token, device_id)."""
        body: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        }
        if device_id:
            body["device_id"] = device_id
        reply = self.request("POST", "/_matrix/client/v3/login", body)
        return reply["access_token"], reply["device_id"]

    def __enter__(self) -> SynapseServer:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
