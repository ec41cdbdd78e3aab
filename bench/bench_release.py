#!/usr/bin/env python3
"""Benchmark `fab release` and `fab rollback` on a booted Debian host, under load through Caddy (run as root).

Boots a baked test host, builds the example site's git repo, provisions, releases v1 (warm-up: builds
the venv), then times the whole `fab` command, run as an operator runs it, for:

- a release with unchanged requirements (v1.2 and v1 in turn) and a rollback, --runs times each,
  interleaved so that every run changes the live release;
- a release with changed requirements (v2, then v3-reqs: a new venv built by pip from PyPI),
  --reqs-runs times, reported apart; the v2 releases in between are reported too;
- then --profile-runs more releases and rollbacks with every SSH round trip timed (not in the table),
  and --what-if-runs more of them with TCP_NODELAY set on fab's SSH socket (what Nagle's algorithm costs).

Every one of those runs happens under a steady load through Caddy (`Load`, --rate requests/s) and
records: wall time, the time the task reports in its summary line, the SSH commands it issued
(sshd's own log at LogLevel VERBOSE: one "Starting session" line per command or subsystem the
deploy user starts), and the requests that did not get a 2xx (must be 0).

    python bench/bench_release.py [--suite bookworm|trixie] [--runs 5] [--reqs-runs 2] [--profile-runs 2] [--what-if-runs 2]

Exit status: 0 when every run succeeded with zero dropped requests (timing targets are reported,
not enforced), 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sum_tasks.testing.hosts import TestHost

REPO = Path(__file__).resolve().parents[1]
SLUG = "acme"
DOMAIN = "acme.test"
SITE_ROOT = f"/srv/sum/{SLUG}"
DEPLOY_USER = "deploy"
UNITS = tuple(f"sum-{SLUG}-gunicorn@{colour}.service" for colour in ("blue", "green", "amber"))
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-sum-bench.conf"
MIN_RATE = 40.0
LOAD_MARGIN = 0.5  # seconds of load before fab starts and after it exits
LOAD_WORKERS = 16  # threads of the load; enough to keep the rate when a busy host answers slowly
NODELAY_ENV = "SUM_BENCH_NODELAY"
STEP_SLACK = 0.006  # step lines print their duration rounded to 10 ms: a step may start this much earlier
FAB_TIMEOUT = 300.0
PIP_TIMEOUT = 1800.0

KINDS: dict[str, tuple[str, float | None]] = {
    "unchanged": ("release, unchanged requirements", 1.5),
    "rollback": ("rollback", 1.0),
    "reqs": ("release, changed requirements (new venv: pip)", None),
    "migrate": ("release v2: pending migration (backup, migrate)", None),
    "cached": ("release, changed requirements, venv already built", None),
}
# What a run of each kind must print, so a run that silently did something else is not timed as this kind.
EXPECT = {
    "unchanged": "requirements unchanged: venv reused, nothing downloaded",
    "reqs": "built a new venv",
    "migrate": "1 pending migrations",
    "cached": "requirements unchanged: venv reused, nothing downloaded",
    "rollback": "(warm standby) once /health/ answers 200",
}

SUMMARY_RE = re.compile(r"^\[[^\]]+\] (?:release|rollback)\b.*\bsteps in (?P<seconds>\d+(?:\.\d+)?)s$", re.MULTILINE)
STEP_RE = re.compile(r"^  (?P<status>ok|changed|FAILED|would change)\s+(?P<name>.+?) \((?P<seconds>\d+\.\d+)s\)(?:  .*)?$")
SESSION_RE = re.compile(r"Starting session: (?P<type>subsystem '[^']*'|forced-command .*?|command|shell)(?: on \S+)? for (?P<user>\S+) from ")
ACCEPTED_RE = re.compile(r"Accepted \S+ for (?P<user>\S+) from ")
SUPPRESSED_RE = re.compile(r"Suppressed \d+ messages from .*(ssh|session)")


class BenchError(RuntimeError):
    """The benchmark cannot go on: a fab command failed or the host is not in the state a run needs."""


# --- profiling a fab run from the inside -------------------------------------------------------------


class StampedStream:
    """Passes writes through to `inner` and notes when each line was completed."""

    def __init__(self, inner: TextIO, lines: list[tuple[float, str]]) -> None:
        self.inner, self.lines, self.partial = inner, lines, ""

    def write(self, text: str) -> int:
        self.partial += text
        *done, self.partial = self.partial.split("\n")
        now = time.monotonic()
        self.lines.extend((now, line) for line in done)
        return self.inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def profile_fab(out: str, argv: list[str]) -> int:
    """Run `fab ARGV` in this process with every SSH round trip timed; write the timeline to `out` (JSON).

    Times are `time.monotonic()`, which is system-wide on Linux, so the parent can line them up with its own.
    """
    main_at = time.monotonic()
    import paramiko
    from fabric import Connection
    from fabric.main import program

    imported_at = time.monotonic()
    events: list[dict[str, Any]] = []
    lines: list[tuple[float, str]] = []
    counts = {"exec": 0, "subsystem": 0}
    depth = [0]  # nesting of timed calls: a run's own connect and exec request are not events of their own

    def timed(kind: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if kind == "connect" and self.is_connected:
                return original(self, *args, **kwargs)
            start, level = time.monotonic(), depth[0]
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
                if kind == "put":  # put(local file object, remote path)
                    what = f"put -> {args[1] if len(args) > 1 else kwargs.get('remote', '')}"
                else:
                    what = str(args[0]) if args else ""
                events.append({"kind": kind, "start": start, "end": time.monotonic(), "depth": level, "what": what})
        return wrapper

    def counted(kind: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(self: Any, arg: str) -> Any:
            counts[kind] += 1
            if depth[0] == 0:  # a channel opened outside Connection.run: the site lock
                now = time.monotonic()
                events.append({"kind": f"raw {kind}", "start": now, "end": now, "depth": 0, "what": arg})
            return original(self, arg)
        return wrapper

    if os.environ.get(NODELAY_ENV) == "1":  # what-if: no Nagle delay on fab's SSH socket
        plain_open = Connection.open

        @functools.wraps(plain_open)
        def open_nodelay(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = plain_open(self, *args, **kwargs)
            self.client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return result

        Connection.open = open_nodelay
    Connection.open = timed("connect", Connection.open)
    plain_getaddrinfo = socket.getaddrinfo

    @functools.wraps(plain_getaddrinfo)
    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if depth[0]:  # paramiko resolving the host it connects to: part of the connect
            return plain_getaddrinfo(host, *args, **kwargs)
        start = time.monotonic()
        try:
            return plain_getaddrinfo(host, *args, **kwargs)
        finally:
            events.append({"kind": "dns", "start": start, "end": time.monotonic(), "depth": 0,
                           "what": f"local DNS lookup of {host}"})

    socket.getaddrinfo = getaddrinfo
    Connection.run = timed("run", Connection.run)
    Connection.sudo = timed("sudo", Connection.sudo)
    Connection.put = timed("put", Connection.put)
    paramiko.Channel.exec_command = counted("exec", paramiko.Channel.exec_command)
    paramiko.Channel.invoke_subsystem = counted("subsystem", paramiko.Channel.invoke_subsystem)
    sys.stdout = StampedStream(sys.stdout, lines)  # type: ignore[assignment]
    code = 0
    try:
        program.run(["fab", *argv])
    except SystemExit as err:
        code = 0 if err.code is None else err.code if isinstance(err.code, int) else 1
    finally:
        sys.stdout.flush()
        Path(out).write_text(json.dumps({"main_at": main_at, "imported_at": imported_at, "end_at": time.monotonic(),
                                         "events": events, "lines": lines, "counts": counts}))
    return code


# --- what one run measured ---------------------------------------------------------------------------


@dataclass
class SshCount:
    commands: int = 0
    sftp: int = 0
    connections: int = 0
    exact: bool = True

    def describe(self) -> str:
        text = f"{self.commands} commands" + (f" + {self.sftp} sftp" if self.sftp else "") + f", {self.connections} conn"
        return text + ("" if self.exact else " (journal suppressed lines: not exact)")


@dataclass
class Segment:
    """A stretch of one profiled fab run, and the remote calls that started in it: (seconds, command)."""

    label: str
    seconds: float
    commands: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Run:
    kind: str
    args: tuple[str, ...]
    wall: float
    task: float | None
    ssh: SshCount
    requests: int
    rate: float
    dropped: int
    failures: list[str]
    steps: list[tuple[str, float]]
    runner_load: float
    other_hosts: int
    settle: float = 0.0
    variant: str = ""  # "" measured as the operator runs it; "profiled"; "nodelay": profiled with TCP_NODELAY
    profile: list[Segment] | None = None
    hook_counts: dict[str, int] | None = None

    @property
    def overhead(self) -> float | None:
        return None if self.task is None else self.wall - self.task


@dataclass
class Results:
    suite: str
    rate: float
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    floors: list[tuple[str, float, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    max_load: float | None = None
    quiet_wait: float = 0.0

    def measured(self, kind: str) -> list[Run]:
        return [r for r in self.runs if r.kind == kind and not r.variant]

    def profiled(self, kind: str, variant: str = "profiled") -> list[Run]:
        return [r for r in self.runs if r.kind == kind and r.variant == variant and r.profile]


# --- talking to the host -----------------------------------------------------------------------------


def q(text: str) -> str:
    return shlex.quote(text)


def root(host: TestHost, command: str, timeout: float = 120.0) -> str:
    return host.ssh(command, timeout=timeout).stdout


def enable_sshd_verbose(host: TestHost) -> None:
    """sshd logs one 'Starting session: ... for USER' line per command or subsystem at LogLevel VERBOSE.

    The drop-in sorts before the others, and sshd keeps the first value it reads; `reload` only affects
    new connections, which is all the benchmark counts.
    """
    root(host, f"printf 'LogLevel VERBOSE\\n' > {SSHD_DROPIN} && sshd -t && systemctl reload ssh")
    for _ in range(100):  # sshd re-executes itself on reload: for a moment nothing listens on port 22
        answer = host.ssh("sshd -T | sed -n 's/^loglevel //p'", check=False)
        if answer.returncode != 255:
            break
        time.sleep(0.1)
    level = answer.stdout.strip()
    if level.upper() != "VERBOSE":
        raise BenchError(f"sshd did not take LogLevel VERBOSE (it says {level!r})")


def journal_cursor(host: TestHost) -> str:
    out = root(host, "journalctl --no-pager -n 0 --show-cursor")
    match = re.search(r"^-- cursor: (\S+)", out, re.MULTILINE)
    if not match:
        raise BenchError(f"no journal cursor from the host: {out!r}")
    return match.group(1)


def count_sessions(host: TestHost, cursor: str, user: str = DEPLOY_USER) -> SshCount:
    """SSH sessions `user` started since `cursor`, from sshd's lines in the host's journal.

    A marker logged afterwards bounds the window: journald reads the syslog socket in order, so once the
    marker is in the journal every sshd line written before it is too.
    """
    marker = f"sum-bench end {uuid.uuid4().hex}"
    script = (
        f"logger -t sum-bench {q(marker)}; i=0; while [ $i -lt 100 ]; do "
        f"out=$(journalctl --no-pager -o cat --after-cursor={q(cursor)}); "
        f"case \"$out\" in *{q(marker)}*) break;; esac; i=$((i+1)); sleep 0.05; done; printf '%s\\n' \"$out\""
    )
    lines = root(host, script).splitlines()
    if marker not in lines:
        raise BenchError("the journal never showed the end marker: cannot count SSH commands")
    count = SshCount()
    for line in lines[:lines.index(marker)]:
        if (match := SESSION_RE.search(line)) and match["user"] == user:
            if match["type"].startswith("subsystem"):
                count.sftp += 1
            else:
                count.commands += 1
        elif (match := ACCEPTED_RE.search(line)) and match["user"] == user:
            count.connections += 1
        elif SUPPRESSED_RE.search(line):
            count.exact = False
    return count


def live_sha(ip: str) -> str:
    """The git SHA that /health/ reports through Caddy."""
    from sum_tasks.testing.load import health_through_caddy

    status, body = health_through_caddy(ip, DOMAIN)
    if status != 200:
        raise BenchError(f"/health/ through Caddy answered {status}: {body}")
    return str(body["version"]["git_sha"])


def settle(host: TestHost, timeout: float = 60.0) -> float:
    """Wait until no colour is starting or stopping (the live one and its warm standby run); returns the seconds waited."""
    started = time.monotonic()
    while True:
        states = root(host, f"systemctl is-active {' '.join(UNITS)} || true").split()
        if "active" in states and not {"activating", "deactivating", "reloading"} & set(states):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise BenchError(f"the colours did not settle within {timeout:.0f}s: {states}")
        time.sleep(0.1)


def other_hosts(host: TestHost) -> int:
    """Other test hosts up on this machine (other people's tests share the 2 cores)."""
    return sum(1 for path in Path("/run/sum-tasks").glob("sumt-*") if path.is_dir() and path.name != host.netns)


def fab_command() -> list[str]:
    """The `fab` console script an operator would type, from this interpreter's environment (no pyenv shim)."""
    script = Path(sys.executable).with_name("fab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fabric"]


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def parse_steps(output: str) -> list[tuple[str, float]]:
    return [(normal_step(m["name"]), float(m["seconds"])) for line in output.splitlines() if (m := STEP_RE.match(line))]


def normal_step(name: str) -> str:
    """Step names without what changes from run to run (ref, colour, backup label)."""
    name = re.sub(r"^fetch \S+", "fetch <ref>", name)
    name = re.sub(r"^start (?:blue|green)\b", "start <colour>", name)
    return re.sub(r"^site backup \(.*\)$", "site backup", name)


def short(command: str, width: int = 88) -> str:
    """A remote command as one readable line."""
    text = command.removeprefix("sh -c ")
    text = " ".join(text.replace("'\"'\"'", "'").split())
    return text if len(text) <= width else text[:width - 3] + "..."


# --- the benchmark -----------------------------------------------------------------------------------


class Bench:
    def __init__(self, host: TestHost, client: Path, tags: dict[str, str], results: Results) -> None:
        self.host, self.client, self.tags, self.results = host, client, tags, results
        self.fab_argv = fab_command()
        self.live_ref = self.previous_ref = "v1"

    def fab(self, *args: str, timeout: float = FAB_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run fab without measuring it; a failure stops the benchmark."""
        result = subprocess.run([*self.fab_argv, *args], cwd=self.client, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        if result.returncode:
            raise BenchError(f"fab {' '.join(args)} exited {result.returncode}:\n{tail(result.stdout)}\n{tail(result.stderr)}")
        return result

    def release(self, ref: str) -> tuple[str, ...]:
        return ("-H", f"{DEPLOY_USER}@vps", "release", "--ref", ref)

    def measure(self, kind: str, args: tuple[str, ...], expect_sha: str, variant: str = "",
                timeout: float = FAB_TIMEOUT) -> Run:
        """One fab command under load: wall time, reported time, SSH commands, dropped requests; checks the outcome."""
        from sum_tasks.testing.load import Load

        self.wait_quiet()
        cursor = journal_cursor(self.host)
        runner_load, others = os.getloadavg()[0], other_hosts(self.host)
        argv = [*self.fab_argv, *args]
        profile_out, env = None, ({**os.environ, NODELAY_ENV: "1"} if variant == "nodelay" else None)
        if variant:
            fd, name = tempfile.mkstemp(prefix="fab-profile-", suffix=".json")
            os.close(fd)
            profile_out = Path(name)
            argv = [sys.executable, str(Path(__file__).resolve()), "--profile-fab", str(profile_out), *args]
        try:
            with Load(self.host.ip, DOMAIN, rate=self.results.rate, workers=LOAD_WORKERS) as load:
                time.sleep(LOAD_MARGIN)
                spawned = time.monotonic()
                result = subprocess.run(argv, cwd=self.client, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                        env=env, timeout=timeout, check=False)
                exited = time.monotonic()
                time.sleep(LOAD_MARGIN)
            data = json.loads(profile_out.read_text() or "{}") if profile_out else {}
        finally:
            if profile_out:
                profile_out.unlink(missing_ok=True)
        ssh = count_sessions(self.host, cursor)
        summary = SUMMARY_RE.search(result.stdout)
        run = Run(kind=kind, args=args, wall=exited - spawned, task=float(summary["seconds"]) if summary else None, ssh=ssh,
                  requests=load.total, rate=load.total / load.seconds, dropped=load.failed, failures=list(load.failures),
                  steps=parse_steps(result.stdout), runner_load=runner_load, other_hosts=others, variant=variant)
        if variant:
            run.profile = segments(data, spawned, exited) if data else []
            run.hook_counts = data.get("counts")
        self.results.runs.append(run)
        self.check(run, result, expect_sha)
        run.settle = settle(self.host)
        print(progress(run), flush=True)
        return run

    def wait_quiet(self) -> None:
        """With --max-runner-load, wait (up to --quiet-wait s) until this machine's 1-minute load average is below it."""
        limit, deadline = self.results.max_load, time.monotonic() + self.results.quiet_wait
        if limit is None:
            return
        while os.getloadavg()[0] > limit:
            if time.monotonic() > deadline:
                self.results.notes.append(f"runner load stayed above {limit:g} for {self.results.quiet_wait:g}s: measured anyway")
                return
            time.sleep(2)

    def check(self, run: Run, result: subprocess.CompletedProcess[str], expect_sha: str) -> None:
        what = f"fab {' '.join(run.args)}"
        if result.returncode:
            raise BenchError(f"{what} exited {result.returncode}:\n{tail(result.stdout)}\n{tail(result.stderr)}")
        if run.kind in EXPECT and EXPECT[run.kind] not in result.stdout:
            raise BenchError(f"{what} is not a '{KINDS[run.kind][0]}' run: its output lacks {EXPECT[run.kind]!r}\n{tail(result.stdout)}")
        if "stopped stale" in result.stdout:
            self.results.notes.append(f"{what}: had to stop a stale colour first (not settled?)")
        sha = live_sha(self.host.ip)
        if sha != expect_sha:
            raise BenchError(f"after {what}, /health/ reports {sha[:12]}, expected {expect_sha[:12]}")
        if run.task is None:
            self.results.problems.append(f"{what}: no summary line in its output")
        if run.dropped:
            self.results.problems.append(f"{what}: {run.dropped} of {run.requests} requests dropped: {run.failures[:5]}")
        if run.rate < MIN_RATE:
            self.results.notes.append(f"{what}: the load reached only {run.rate:.1f} req/s (< {MIN_RATE:.0f})")
        if not run.ssh.exact:
            self.results.notes.append(f"{what}: journald suppressed sshd lines, the SSH count is a lower bound")

    def releases_and_rollbacks(self, count: int, variant: str = "", first: int = 0) -> int:
        """`count` unchanged-requirements releases and `count` rollbacks, interleaved so each one changes the live code.

        Even rounds release the other ref then roll back to it; odd rounds roll back (to the release just left)
        then release: the refs go v1.2, v1, v1.2 ... and the rollbacks go both ways. Returns the next round.
        """
        other = {"v1": "v1.2", "v1.2": "v1"}
        for i in range(first, first + count):
            steps = ("release", "rollback") if i % 2 == 0 else ("rollback", "release")
            for step in steps:
                if step == "release":
                    ref = other[self.live_ref]
                    self.measure("unchanged", self.release(ref), self.tags[ref], variant=variant)
                    self.previous_ref, self.live_ref = self.live_ref, ref
                else:
                    self.measure("rollback", ("rollback",), self.tags[self.previous_ref], variant=variant)
                    self.previous_ref, self.live_ref = self.live_ref, self.previous_ref
        return first + count

    def changed_requirements(self, count: int) -> None:
        """v2 then v3-reqs, `count` times; from the second time on, v3-reqs' venv is deleted so pip builds it again."""
        for i in range(count):
            self.measure("migrate" if i == 0 else "cached", self.release("v2"), self.tags["v2"], timeout=PIP_TIMEOUT)
            if i:
                self.drop_venv_of("v3-reqs")
            self.measure("reqs", self.release("v3-reqs"), self.tags["v3-reqs"], timeout=PIP_TIMEOUT)
            self.live_ref = "v3-reqs"

    def drop_venv_of(self, ref: str) -> None:
        records = [json.loads(line) for line in root(self.host, f"cat {SITE_ROOT}/releases.jsonl").splitlines() if line.strip()]
        venv = next(r["venv"] for r in reversed(records) if r.get("ref") == ref and r.get("result") == "good")
        live = root(self.host, f"readlink {SITE_ROOT}/current/.venv").strip().rstrip("/").rsplit("/", 1)[-1]
        if venv == live:
            raise BenchError(f"{ref}'s venv {venv} is the live one")
        root(self.host, f"rm -rf {SITE_ROOT}/venvs/{q(venv)}")

    def floors(self) -> None:
        """What any fab command costs before doing anything: start-up, an SSH connection, one no-op command."""
        found = self.results.floors
        walls = []
        for _ in range(3):
            started = time.monotonic()
            subprocess.run([*self.fab_argv, "--list"], cwd=self.client, capture_output=True, check=True, stdin=subprocess.DEVNULL)
            walls.append(time.monotonic() - started)
        found.append(("`fab --list` in the client dir (start-up, imports, fabfile; no SSH)", statistics.median(walls), "median of 3"))
        warm = [self.connect_time(cold=False) for _ in range(5)]
        found.append(("ssh connect as deploy, its user manager still up (as between these runs)", statistics.median(warm), "median of 5"))
        cold = [self.connect_time(cold=True) for _ in range(2)]
        found.append(("ssh connect as deploy, no session for 10 s (logind starts user@)", statistics.median(cold),
                      "median of 2; an operator's usual case"))
        with self.host.connection(DEPLOY_USER) as c:
            c.open()
            noop = []
            for _ in range(10):
                started = time.monotonic()
                c.run("true", hide=True)
                noop.append(time.monotonic() - started)
            transport = c.client.get_transport()
            raw = []
            for _ in range(10):
                started = time.monotonic()
                channel = transport.open_session()
                channel.exec_command("true")
                channel.recv_exit_status()
                channel.close()
                raw.append(time.monotonic() - started)
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nodelay = []
            for _ in range(10):
                started = time.monotonic()
                c.run("true", hide=True)
                nodelay.append(time.monotonic() - started)
        found.append(("one no-op command on an open connection, Connection.run('true')", statistics.median(noop), "median of 10"))
        found.append(("the same with a bare paramiko channel (open, exec, exit status)", statistics.median(raw), "median of 10"))
        found.append(("Connection.run('true') after setting TCP_NODELAY on the socket", statistics.median(nodelay), "median of 10"))

    def connect_time(self, cold: bool) -> float:
        """Seconds to open an SSH connection as the deploy user; `cold`: once logind has stopped its user manager."""
        if cold:
            unit = f"user@$(id -u {DEPLOY_USER}).service"
            root(self.host, f"for i in $(seq 300); do systemctl is-active -q {unit} || exit 0; sleep 0.1; done; exit 1")
        else:
            time.sleep(0.3)
        with self.host.connection(DEPLOY_USER) as c:
            started = time.monotonic()
            c.open()
            return time.monotonic() - started


def segments(data: dict[str, Any], spawned: float, exited: float) -> list[Segment]:
    """Cut a profiled run's wall time into start-up, connect, lock, each step and exit, with the remote calls in each."""
    events = [e for e in data["events"] if e["depth"] == 0]
    connect = next((e for e in events if e["kind"] == "connect"), None)
    steps = [(normal_step(m["name"]), at - float(m["seconds"]) - STEP_SLACK, at)
             for at, line in data["lines"] if (m := STEP_RE.match(line))]
    if connect is None or not steps:
        return []
    bounds = [
        ("python start-up", spawned, data["main_at"]),
        ("import fabric (invoke, paramiko, cryptography)", data["main_at"], data["imported_at"]),
        ("fab: parse, load fabric.yaml + fabfile (sum_tasks)", data["imported_at"], connect["start"]),
        ("ssh connect (TCP, kex, auth, PAM session)", connect["start"], connect["end"]),
        ("take the site lock", connect["end"], steps[0][1]),
    ]
    previous = steps[0][1]
    for name, start, end in steps:
        start = max(start, previous)
        if start - previous > STEP_SLACK or any(previous <= e["start"] < start for e in events if e["kind"] != "connect"):
            bounds.append((f"between steps, before '{name}'", previous, start))
        bounds.append((f"step '{name}'", start, end))
        previous = end
    bounds += [("after the last step: summary, disconnect", previous, data["end_at"]), ("interpreter exit", data["end_at"], exited)]
    found = []
    for label, start, end in bounds:
        calls = [(e["end"] - e["start"], e["what"]) for e in events
                 if e["kind"] != "connect" and start <= e["start"] < end]
        found.append(Segment(label, max(end - start, 0.0), calls))
    return found


# --- reporting ---------------------------------------------------------------------------------------


def progress(run: Run) -> str:
    task = f"{run.task:.1f}s" if run.task is not None else "?"
    tag = {"": "", "profiled": " [profiled]", "nodelay": " [profiled, TCP_NODELAY]"}[run.variant]
    return (f"  {' '.join(run.args):<38} wall {run.wall:5.2f}s  task {task:>5}  ssh {run.ssh.describe():<28} "
            f"load {run.requests} req ({run.rate:.0f}/s), {run.dropped} dropped  [runner load {run.runner_load:.1f}, "
            f"colours settled after {run.settle:.1f}s]{tag}")


def spread(values: Iterable[float], fmt: str = "{:.2f}") -> str:
    values = list(values)
    if not values:
        return "-"
    return " / ".join(fmt.format(v) for v in (statistics.median(values), min(values), max(values)))


def span(values: Iterable[int]) -> str:
    values = sorted(set(values))
    return "-" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def report(results: Results) -> str:
    title = (f"\nrelease benchmark, Debian {results.suite}, load {results.rate:g} req/s through Caddy "
             "(times in s: median / min / max)\n")
    out = [title]
    head = f"{'kind':<52} {'n':>2}  {'wall (whole fab)':<21}  {'task (summary)':<18}  {'fab start+exit':<18}  " \
           f"{'SSH cmd/sftp/conn':<17}  {'load req/s min':<14}  dropped"
    out += [head, "-" * len(head)]
    for kind, (label, _) in KINDS.items():
        runs = results.measured(kind)
        if not runs:
            continue
        ssh = f"{span(r.ssh.commands for r in runs)} / {span(r.ssh.sftp for r in runs)} / {span(r.ssh.connections for r in runs)}"
        out.append(f"{label:<52} {len(runs):>2}  {spread(r.wall for r in runs):<21}  "
                   f"{spread((r.task for r in runs if r.task is not None), '{:.1f}'):<18}  "
                   f"{spread(o for r in runs if (o := r.overhead) is not None):<18}  {ssh:<17}  "
                   f"{min(r.rate for r in runs):<14.1f}  {sum(r.dropped for r in runs)}")
    out.append("\n'task' is the time fab's summary line reports (0.1 s resolution): from the task's start, SSH connect included, "
               "to the summary;\n'fab start+exit' = wall - task: interpreter start, imports, loading the fabfile, and exit.")
    out.append("\ntargets (issue 3, 'Speed'):")
    for kind, (label, target) in KINDS.items():
        runs = results.measured(kind)
        if target is None or not runs:
            continue
        wall = statistics.median(r.wall for r in runs)
        tasks = [r.task for r in runs if r.task is not None]
        task = statistics.median(tasks) if tasks else float("nan")
        out.append(f"  {label} <= {target:g} s: wall median {wall:.2f} s {'MET' if wall <= target else 'MISSED'}; "
                   f"task-reported median {task:.1f} s {'MET' if task <= target else 'MISSED'}")
    counted = results.runs
    dropped = sum(r.dropped for r in counted)
    out.append(f"  zero dropped requests: {dropped} dropped of {sum(r.requests for r in counted)} requests in {len(counted)} runs "
               f"(every run, profiled ones too; lowest rate {min((r.rate for r in counted), default=0):.1f} req/s) "
               f"{'MET' if dropped == 0 and counted else 'MISSED'}")
    out.append("\nsteps as fab reports them (median s over the measured runs; the rest of 'task' is connect + lock):")
    for kind, (label, _) in KINDS.items():
        runs = results.measured(kind)
        if not runs:
            continue
        names = list(dict.fromkeys(name for r in runs for name, _ in r.steps))
        parts = [f"{name} {statistics.median(s for r in runs for n, s in r.steps if n == name):.2f}" for name in names]
        out.append(f"  {label}: " + "; ".join(parts))
    for kind in ("unchanged", "rollback"):
        if profiled := results.profiled(kind):
            out += profile_report(KINDS[kind][0], profiled)
    for kind in ("unchanged", "rollback"):
        if nodelay := results.profiled(kind, "nodelay"):
            out += profile_report(KINDS[kind][0] + ", what-if TCP_NODELAY on fab's socket", nodelay, listing=False)
            plain = results.profiled(kind)
            if plain:
                out.append(f"  wall median {statistics.median(r.wall for r in nodelay):.2f} s with TCP_NODELAY vs "
                           f"{statistics.median(r.wall for r in plain):.2f} s profiled without it; the parts made of round trips "
                           f"only (lock, state, fetch, switch, record, between steps): {round_trip_bound(nodelay):.3f} s vs "
                           f"{round_trip_bound(plain):.3f} s")
    if results.floors:
        out.append("\nfloors (no load):")
        out += [f"  {label:<72} {seconds:6.3f} s  ({how})" for label, seconds, how in results.floors]
    loads = [r.runner_load for r in results.runs]
    if loads:
        out.append(f"\nrunner load average (1 min) before the runs: {spread(loads, '{:.1f}')}; other test hosts up: "
                   f"{span(r.other_hosts for r in results.runs)} (other people's tests share these 2 cores)")
    out += [f"note: {n}" for n in results.notes]
    out += [f"PROBLEM: {p}" for p in results.problems]
    return "\n".join(out)


ROUND_TRIP_BOUND = re.compile(r"^(take the site lock|step '(state|fetch .*|switch|record and prune)'|between steps.*)$")


def round_trip_bound(runs: list[Run]) -> float:
    """Median over `runs` of the time spent in parts that only do quick remote commands (no gunicorn, Django or pip)."""
    return statistics.median(sum(s.seconds for s in r.profile or [] if ROUND_TRIP_BOUND.match(s.label)) for r in runs)


def profile_report(label: str, runs: list[Run], listing: bool = True) -> list[str]:
    """Median seconds per segment over the profiled runs, then the first run command by command."""
    out = [f"\nwhere the time goes: {label}, {len(runs)} profiled runs under load (median s; remote calls that start in each part)"]
    labels = list(dict.fromkeys(s.label for r in runs for s in r.profile or []))
    for name in labels:
        parts = [s for r in runs for s in r.profile or [] if s.label == name]
        seconds = statistics.median(s.seconds for s in parts)
        calls = statistics.median(len(s.commands) for s in parts)
        out.append(f"  {name:<58} {seconds:6.3f}  {calls:g} calls" if calls else f"  {name:<58} {seconds:6.3f}")
    walls = [r.wall for r in runs]
    out.append(f"  {'wall':<58} {statistics.median(walls):6.3f}")
    hooks = [r.hook_counts for r in runs if r.hook_counts]
    if hooks:
        out.append(f"  SSH commands, sshd log vs the client-side hook: {span(r.ssh.commands for r in runs)} vs "
                   f"{span(h['exec'] for h in hooks)} exec; sftp {span(r.ssh.sftp for r in runs)} vs {span(h['subsystem'] for h in hooks)}")
    first = runs[0]
    if not listing:
        return out
    out.append(f"  first profiled run, fab {' '.join(first.args)} (wall {first.wall:.2f} s):")
    for part in first.profile or []:
        out.append(f"    {part.seconds:6.3f}  {part.label}")
        for seconds, command in part.commands:
            out.append(f"        {seconds:6.3f}  {short(command)}" if seconds else f"        (held)  {short(command)}")
    return out


# --- main ----------------------------------------------------------------------------------------------


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_bench(args: argparse.Namespace, host: TestHost, work: Path, results: Results) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from e2e_support import site_config
    from site_repo import build_site_repo

    from sum_tasks.testing.client import make_client

    tags = build_site_repo(work / "site")
    make_client(work / "site", site_config(host), {"vps": (host, "root")})
    bench = Bench(host, work / "site", tags, results)
    print(f"fab: {' '.join(bench.fab_argv)}; client {work / 'site'}", flush=True)
    started = time.monotonic()
    bench.fab("provision")
    print(f"provisioned in {time.monotonic() - started:.1f}s", flush=True)
    enable_sshd_verbose(host)
    started = time.monotonic()
    bench.fab(*bench.release("v1"), timeout=PIP_TIMEOUT)
    if live_sha(host.ip) != tags["v1"]:
        raise BenchError("v1 is not live after the warm-up release")
    settle(host)
    print(f"warm-up release v1 (builds the venv) in {time.monotonic() - started:.1f}s\n\nmeasured runs:", flush=True)
    next_round = bench.releases_and_rollbacks(args.runs)
    if args.profile_runs:
        print("profiled runs (not in the table):", flush=True)
        next_round = bench.releases_and_rollbacks(args.profile_runs, "profiled", first=next_round)
    if args.what_if_runs:
        print("profiled runs with TCP_NODELAY on fab's SSH socket (what-if, not in the table):", flush=True)
        bench.releases_and_rollbacks(args.what_if_runs, "nodelay", first=next_round)
    if args.reqs_runs:
        print("changed requirements (pip, needs PyPI):", flush=True)
        bench.changed_requirements(args.reqs_runs)
    bench.floors()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("bookworm", "trixie"), default="bookworm")
    parser.add_argument("--runs", type=int, default=5, help="unchanged-requirements releases and rollbacks (each)")
    parser.add_argument("--reqs-runs", type=int, default=2, help="changed-requirements releases (pip; 0 without PyPI)")
    parser.add_argument("--profile-runs", type=int, default=2, help="extra releases and rollbacks timed call by call")
    parser.add_argument("--what-if-runs", type=int, default=2, help="extra profiled releases and rollbacks with TCP_NODELAY")
    parser.add_argument("--max-runner-load", type=float, default=None,
                        help="before each measured run, wait until this machine's 1-minute load average is below this")
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="longest wait for --max-runner-load, seconds")
    parser.add_argument("--rate", type=float, default=45.0, help=f"load through Caddy, requests/s (at least {MIN_RATE:g})")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it boots a test host with systemd-nspawn")
    if args.rate < MIN_RATE:
        parser.error(f"--rate must be at least {MIN_RATE:g}")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    from sum_tasks.testing.hosts import boot_host

    results = Results(args.suite, args.rate, max_load=args.max_runner_load, quiet_wait=args.quiet_wait)
    failed: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        host = boot_host(args.suite)
        try:
            run_bench(args, host, Path(tmp), results)
        except Exception as err:  # noqa: BLE001 (report what was measured, then fail)
            if not isinstance(err, BenchError | subprocess.SubprocessError):
                traceback.print_exc()
            failed = err
        finally:
            host.shutdown()
            left = [p for p in (Path("/run/netns") / host.netns, Path("/run/sum-tasks") / host.netns) if p.exists()]
            print(f"host {host.name} shut down" + (f"; LEFT BEHIND: {left}" if left else "; its netns and workdir are gone"))
    print(report(results))
    if failed:
        print(f"\nFAILED: {failed}", file=sys.stderr)
        return 1
    return 1 if results.problems else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--profile-fab"]:
        sys.exit(profile_fab(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
