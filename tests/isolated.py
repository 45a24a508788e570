"""A RabbitMQ node and a redis-server of a test's own, for tests that break things.

Chaos tests stop the broker and restart Redis. Doing that to the shared services
(``rabbit@<host>`` on 5672, Redis on 6379) would break every other test running at the
same time, so those tests get a node of their own: own name, ports, data and logs, under a
directory the test owns. Both are started with the distribution's binaries, the way
``scripts/ensure-services.sh`` starts the shared ones, so they behave like production.

Debian's ``rabbitmq-server`` and ``rabbitmqctl`` are wrappers that, run as root, ``su`` to
the ``rabbitmq`` user with HOME=/var/lib/rabbitmq. The node and the CLI therefore share the
Erlang cookie in /var/lib/rabbitmq/.erlang.cookie (the main node's cookie too), and every
file the node touches must be reachable by that user.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.services import ROOT, free_port, wait_until

RABBIT_USER = "rabbitmq"
TASKPLANE_RABBIT_CONF = ROOT / "deploy" / "rabbitmq" / "taskplane.conf"
RABBIT_PLUGINS = ("rabbitmq_management", "rabbitmq_prometheus")
# An extra, ignored Erlang argument carrying the node name. RabbitMQ sets the node name
# at boot from the environment, so without it `ps`/`pgrep -f <nodename>` cannot tell this
# node's VM from the main one.
NODE_MARKER = "-taskplane_node"
# Ports a node must not take: the main node's, and the range every rabbitmqctl picks its own
# distribution port from (RABBITMQ_CTL_DIST_PORT_MIN..MAX, fixed at 35672-35682).
RESERVED_PORTS = frozenset({4369, 5672, 15672, 15692, 25672, *range(35672, 35683)})


def scratch_dir(prefix: str = "tp-isolated-") -> Path:
    """A fresh directory under /tmp that the ``rabbitmq`` user can traverse.

    pytest's ``tmp_path`` lives under /tmp/pytest-of-<user> (mode 0700), where a node that
    drops to the ``rabbitmq`` user cannot reach its own files.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def accepts(port: int, host: str = "127.0.0.1", timeout: float = 1) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (``free_port`` alone may hand out one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports and port not in RESERVED_PORTS:
            ports.append(port)
    return ports


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs. A zombie counts as gone: init here may take a second to reap
    a daemon that exited (redis-server, the Erlang VM), and it holds nothing by then."""
    if pid is None:
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _process_ids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, found by parent id (sessions and groups do not matter)."""
    children: dict[int, list[int]] = {}
    for other in _process_ids():
        try:
            fields = Path(f"/proc/{other}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(other)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_bounded(
    argv: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; past ``timeout``, kill it and everything it started, then raise.

    ``subprocess.run`` kills only the child. Debian's wrappers ``su`` to ``rabbitmq``, and
    su runs the real command in a session of its own, so a hung ``rabbitmqctl`` would leave
    an Erlang VM behind holding our pipes open. With ``log``, output goes to that file:
    a daemon that keeps its inherited stdout would otherwise block reading the pipe.
    """
    sink = log.open("ab") if log else subprocess.PIPE
    try:
        with subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT if log else subprocess.PIPE,
            start_new_session=True,
        ) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in [proc.pid, *_descendants(proc.pid)]:
                    kill(pid)
                proc.communicate()
                raise TimeoutError(f"{' '.join(argv)} took longer than {timeout}s") from None
    finally:
        if log:
            sink.close()  # type: ignore[union-attr]
    return subprocess.CompletedProcess(argv, proc.returncode, _text(out), _text(err))


def _text(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace")


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not found)"
    return "\n".join(text.splitlines()[-lines:])


def _require_traversable(path: Path, user: str) -> None:
    """Fail early, and say why, when ``user`` could not reach files under ``path``."""
    account = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, account.pw_gid))
    for directory in [path, *path.parents]:
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise PermissionError(
                f"user {user!r} cannot traverse {directory} (mode {oct(info.st_mode & 0o777)}); "
                "put the node under a directory such as tests.isolated.scratch_dir()"
            )


def _chown_tree(path: Path, user: str) -> None:
    account = pwd.getpwnam(user)
    os.chown(path, account.pw_uid, account.pw_gid)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(Path(parent, name), account.pw_uid, account.pw_gid)


def _clean_env() -> dict[str, str]:
    """Our environment without RABBITMQ_* settings, which would redirect a node or the CLI."""
    return {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")}


class RabbitCtlError(RuntimeError):
    """``rabbitmqctl`` exited non-zero; the message carries its output."""


class RabbitNode:
    """A RabbitMQ node of its own: own name, ports, data and log dirs.

    Ports are picked once, so a restarted node comes back where clients expect it. Nothing
    of the machine's own configuration is read: /etc/rabbitmq/conf.d, advanced.config and
    rabbitmq-env.conf are all pointed at this node's directory (conf.d is otherwise loaded
    on top of RABBITMQ_CONFIG_FILE and could move the listeners).
    """

    def __init__(self, base_dir: Path, name: str | None = None):
        self.name = name or f"tp-chaos-{uuid.uuid4().hex[:6]}"
        self.nodename = f"{self.name}@{socket.gethostname().split('.')[0]}"
        self.dir = Path(base_dir) / self.name
        ports = free_ports(4)
        self.amqp_port, self.management_port, self.prometheus_port, self.dist_port = ports
        self.config_file = self.dir / "rabbitmq.conf"
        self.conf_d = self.dir / "conf.d"
        self.plugins_file = self.dir / "enabled_plugins"
        self.pid_file = self.dir / "rabbitmq.pid"
        self.mnesia_base = self.dir / "mnesia"
        self.log_dir = self.dir / "log"
        self.log_file = self.log_dir / f"{self.nodename}.log"
        self.startup_log = self.dir / "startup.log"

    def __repr__(self) -> str:
        return f"RabbitNode({self.nodename}, amqp={self.amqp_port}, dir={self.dir})"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}//"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}/api"

    def start(self, timeout: float = 90) -> RabbitNode:
        """Boot the node (or its app, if only that was stopped) and wait until it serves."""
        if self.pids():
            if not self.is_up():
                self.start_app(timeout)
            return self
        self._prepare()
        deadline = time.monotonic() + timeout
        try:
            result = run_bounded(
                ["rabbitmq-server", "-detached"], 30, self._server_env(), log=self.startup_log
            )
            if result.returncode:
                raise RuntimeError(f"rabbitmq-server -detached exited {result.returncode}")
            wait_until(self.pids, 10, what=f"the Erlang VM of {self.nodename}")
            wait_until(
                lambda: accepts(self.amqp_port) or not self.pids(),
                max(1, deadline - time.monotonic()),
                what=f"{self.nodename} to accept AMQP on {self.amqp_port}",
            )
            if not self.pids():
                raise RuntimeError("the node's Erlang VM exited while booting")
            self.ctl("await_startup", timeout=max(5, deadline - time.monotonic()))
        except Exception as exc:
            self.stop()
            raise RuntimeError(
                f"RabbitMQ node {self.nodename} did not start: {exc}\n{self.log_tail()}"
            ) from exc
        return self

    def stop_app(self, timeout: float = 60) -> None:
        """Stop the RabbitMQ app: clients are disconnected and the AMQP port closes."""
        self.ctl("stop_app", timeout=timeout)
        wait_until(lambda: not accepts(self.amqp_port), 10, what="the AMQP port to close")

    def start_app(self, timeout: float = 60) -> None:
        self.ctl("start_app", timeout=timeout)
        wait_until(lambda: accepts(self.amqp_port), timeout, what="the AMQP port to reopen")

    def restart(self) -> None:
        """Bounce the broker app (not the VM): what clients see as a broker restart."""
        self.stop_app()
        self.start_app()

    def stop(self, timeout: float = 60) -> None:
        """Halt the whole node and wait until its VM is gone; killed if it will not go."""
        if not self.pids():
            return
        try:
            self.ctl("stop", timeout=timeout)
        except (RabbitCtlError, TimeoutError):
            pass  # not answering: the kill below deals with it
        try:
            wait_until(lambda: not self.pids(), 30, what=f"{self.nodename} to exit")
        except TimeoutError:
            for pid in self.pids():
                kill(pid)
            wait_until(lambda: not self.pids(), 10, what=f"{self.nodename} to die")

    def is_up(self) -> bool:
        """Whether the broker serves AMQP (false after ``stop_app`` though the VM runs)."""
        return bool(self.pids()) and accepts(self.amqp_port)

    def pids(self) -> list[int]:
        """This node's OS processes (its VM and helpers started with our marker)."""
        wanted = [NODE_MARKER, self.nodename]
        found = []
        for pid in _process_ids():
            args = _cmdline(pid)
            if any(args[i : i + 2] == wanted for i in range(len(args) - 1)):
                found.append(pid)
        return found

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl -n <this node> ...`` and return its stdout."""
        result = run_bounded(["rabbitmqctl", "-n", self.nodename, *args], timeout, _clean_env())
        if result.returncode:
            output = (result.stdout + result.stderr).strip()
            raise RabbitCtlError(
                f"rabbitmqctl -n {self.nodename} {' '.join(args)} exited "
                f"{result.returncode}:\n{output[-3000:]}"
            )
        return result.stdout

    def log_tail(self, lines: int = 30) -> str:
        """The log's first errors (a failed boot logs its cause, then a long shutdown) and end."""
        try:
            log = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            log = [f"({self.log_file} not found)"]
        errors = [line for line in log if "[error]" in line or "[critical]" in line]
        return "\n".join(
            [
                *self._crash_slogan(),
                f"--- first errors in {self.log_file} ---",
                *errors[:lines],
                f"--- end of {self.log_file} ---",
                *log[-lines:],
                f"--- {self.startup_log} ---",
                tail(self.startup_log, lines),
            ]
        )

    def _crash_slogan(self) -> list[str]:
        """Why the VM died, from its crash dump: errors before logging starts (a bad config
        file, say) appear nowhere else, since ``-detached`` sends stdout to /dev/null."""
        try:
            with (self.dir / "erl_crash.dump").open(errors="replace") as dump:
                head = [dump.readline() for _ in range(5)]
        except OSError:
            return []
        return [line.rstrip() for line in head if line.startswith("Slogan:")]

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare(self) -> None:
        """Write config and plugins, and hand the node's directory to the rabbitmq user."""
        self.dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        _require_traversable(self.dir.parent, RABBIT_USER)
        for directory in (self.dir, self.conf_d, self.mnesia_base, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        self.config_file.write_text(self._config())
        self.plugins_file.write_text(f"[{','.join(RABBIT_PLUGINS)}].\n")
        _chown_tree(self.dir, RABBIT_USER)

    def _config(self) -> str:
        """The node's rabbitmq.conf: own loopback listeners plus Taskplane's settings."""
        return "\n".join(
            [
                "# Written by tests/isolated.py for a throwaway test node.",
                f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
                "management.tcp.ip = 127.0.0.1",
                f"management.tcp.port = {self.management_port}",
                "prometheus.tcp.ip = 127.0.0.1",
                f"prometheus.tcp.port = {self.prometheus_port}",
                "loopback_users.guest = true",
                "",
                f"# --- {TASKPLANE_RABBIT_CONF.relative_to(ROOT)} ---",
                TASKPLANE_RABBIT_CONF.read_text(),
            ]
        )

    def _server_env(self) -> dict[str, str]:
        return {
            **_clean_env(),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.mnesia_base),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.plugins_file),
            # Given with or without ".conf", both work on 3.10.
            "RABBITMQ_CONFIG_FILE": str(self.config_file),
            "RABBITMQ_CONFIG_FILES": str(self.conf_d),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"{NODE_MARKER} {self.nodename}",
            # Erlang writes crash dumps to its cwd, which is the main node's /var/lib/rabbitmq.
            "ERL_CRASH_DUMP": str(self.dir / "erl_crash.dump"),
        }


class RedisNode:
    """A redis-server of its own on a free port, append-only so data survives a restart.

    Its files live in ``base_dir/redis-<port>`` so that two nodes may share a base_dir
    without sharing an append-only file.
    """

    def __init__(self, base_dir: Path):
        self.port = free_port()
        self.dir = Path(base_dir) / f"redis-{self.port}"
        self.pid_file = self.dir / "redis.pid"
        self.log_file = self.dir / "redis.log"

    def __repr__(self) -> str:
        return f"RedisNode(port={self.port}, dir={self.dir})"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> RedisNode:
        if self.is_up():
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        result = run_bounded(self._argv(), 10)
        if result.returncode:
            output = (result.stdout + result.stderr).strip()
            raise RuntimeError(f"redis-server exited {result.returncode}: {output}")
        try:
            wait_until(self.is_up, timeout, what=f"redis-server on {self.port} to answer PING")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n--- {self.log_file} ---\n{tail(self.log_file)}") from exc
        return self

    def stop(self, timeout: float = 20) -> None:
        """SHUTDOWN (the AOF is flushed first), else SIGTERM, and SIGKILL for a server that
        will not go (a test may have SIGSTOPped it); wait until the port is closed."""
        pid = self._pid()
        if self.is_up():
            try:
                with self._client() as client:
                    client.shutdown()
            except redis.RedisError:
                if pid:
                    kill(pid, signal.SIGTERM)
        elif pid:
            kill(pid, signal.SIGTERM)
        try:
            self._wait_gone(pid, timeout)
        except TimeoutError:
            if pid is None:
                raise
            kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 10)

    def _wait_gone(self, pid: int | None, timeout: float) -> None:
        wait_until(
            lambda: not accepts(self.port) and not pid_alive(pid),
            timeout,
            what=f"redis-server on {self.port} to exit",
        )

    def restart(self, down_for: float = 0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def is_up(self) -> bool:
        try:
            with self._client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def __enter__(self) -> RedisNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _client(self) -> redis.Redis:
        """A client that fails at once: redis-py 6+ retries a refused connection for ~4 s."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _argv(self) -> list[str]:
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--daemonize", "yes",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.log_file),
        ]  # fmt: skip
