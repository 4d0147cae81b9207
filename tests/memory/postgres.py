"""A throwaway PostgreSQL cluster for the tests: ``initdb`` in a temp dir, a unix socket only.

No TCP port is opened, so parallel runs never clash. initdb and postgres refuse to run as
root, and CI runs as root: there the cluster belongs to the ``postgres`` system user (the
Debian package creates it) and its commands run through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "hearth"
START_TIMEOUT_S = 60


class Unavailable(Exception):
    """PostgreSQL is missing or cannot start here; the message is the one-line skip reason."""


def find_bindir() -> Path:
    """Where initdb and pg_ctl live: PATH, ``pg_config --bindir``, or Debian's versioned folders."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    by_version = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    candidates += [Path(p) for p in reversed(by_version)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise Unavailable("PostgreSQL is not installed (no initdb/pg_ctl; `make test` installs it when run as root)")


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix and the user that own the cluster: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root and there is no 'postgres' system user to own the cluster") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise Unavailable("running as root and runuser is missing, so the cluster cannot run as 'postgres'")
    return [runuser, "-u", "postgres", "--"], user


@dataclass
class Cluster:
    """One running cluster. ``url(db)`` names a database on it for SQLAlchemy + asyncpg."""

    bindir: Path
    root: Path
    prefix: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql on the socket (CREATE DATABASE cannot run inside a transaction)."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-h", str(self.socket_dir), "-U", SUPERUSER, "-d", database, "-Atqc", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb + pg_ctl start in a fresh temp dir, or Unavailable with the reason in one line."""
    bindir = find_bindir()
    prefix, owner = _run_as()
    # Straight under /tmp, not pytest's tmp_path: that one is 0700 root, which 'postgres' cannot enter,
    # and a unix socket path must stay under ~100 bytes.
    root = Path(tempfile.mkdtemp(prefix="hearth-pg-"))
    cluster = Cluster(bindir, root, prefix)
    cluster.socket_dir.mkdir()
    if owner is not None:
        for path in (root, cluster.socket_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    steps = [
        [str(bindir / "initdb"), "-D", str(cluster.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        [str(bindir / "pg_ctl"), "start", "-D", str(cluster.data), "-w", "-t", str(START_TIMEOUT_S),
         "-l", str(root / "log"), "-o",
         f"-c listen_addresses='' -k {cluster.socket_dir} -c fsync=off -c synchronous_commit=off"
         " -c full_page_writes=off -c max_connections=200"],
    ]  # fmt: skip
    for step in steps:
        result = subprocess.run([*prefix, *step], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log_tail = (root / "log").read_text(errors="replace")[-300:] if (root / "log").exists() else ""
            detail = (result.stderr.strip() or result.stdout.strip() or log_tail).splitlines()
            cluster.stop()
            raise Unavailable(f"PostgreSQL cannot start: {Path(step[0]).name} failed: {detail[-1] if detail else '?'}")
    return cluster
