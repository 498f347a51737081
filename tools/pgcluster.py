"""The embedded Postgres: a cluster started from the machine's PostgreSQL binaries.

`make run` keeps its data under .pixelshop/postgres (so work survives restarts); the test
suite starts a throwaway one in a temporary folder. As root, initdb and pg_ctl run as the
`postgres` user through runuser, and the data folder is handed to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them "
    "(Debian/Ubuntu: `apt-get install postgresql-15`) or point PIXELSHOP_PG_BIN at their "
    "folder, or set PIXELSHOP_DATABASE_URL to an existing PostgreSQL 15+ database."
)


class PostgresUnavailable(RuntimeError):
    """The embedded cluster cannot be started on this machine."""


def find_binaries() -> pathlib.Path:
    candidates = [os.environ.get("PIXELSHOP_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += [str(pathlib.Path(p).parent) for p in [shutil.which("initdb") or ""] if p]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "initdb").exists():
            return pathlib.Path(candidate)
    raise PostgresUnavailable(INSTALL_HINT)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` ports free now, all different: each is held until every one is chosen (the
    kernel may hand a port just released to the very next bind)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@dataclass
class PostgresCluster:
    """A local cluster in `root` (data, log and socket live there)."""

    root: pathlib.Path
    port: int
    fast: bool = False  # fsync off: for throwaway test clusters only

    @property
    def data(self) -> pathlib.Path:
        return self.root / "data"

    @property
    def log(self) -> pathlib.Path:
        return self.root / "postgres.log"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self) -> list[str]:
        # initdb refuses to run as root; hand the work to the postgres user.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--"]
        return []

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_postgres(), *args], check=True, capture_output=True, text=True
        )

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as error:
                raise PostgresUnavailable(
                    "running as root needs a `postgres` system user to own the cluster"
                ) from error
            os.chown(self.root, user.pw_uid, user.pw_gid)
            # Every parent must be traversable by postgres.
            for parent in self.root.resolve().parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)

    def is_running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def start(self) -> None:
        """Creates the cluster if needed and starts it (reusing a running one)."""
        binaries = find_binaries()
        self._prepare_root()
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(binaries / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        if self.is_running():
            return
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        try:
            self._run(
                str(binaries / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            )
        except subprocess.CalledProcessError as error:
            tail = self.log.read_text()[-2000:] if self.log.exists() else error.stderr
            raise PostgresUnavailable(f"postgres did not start:\n{tail}") from error
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running():
                return
            time.sleep(0.1)
        raise PostgresUnavailable(f"postgres on port {self.port} did not accept connections")

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                str(find_binaries() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
            )

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def throwaway_cluster(root: pathlib.Path) -> Iterator[PostgresCluster]:
    """A fast cluster on a free port, removed afterwards (for the test suite)."""
    cluster = PostgresCluster(root=root, port=free_port(), fast=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
