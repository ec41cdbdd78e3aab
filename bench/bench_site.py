#!/usr/bin/env python3
"""Benchmark a whole site's backups, off-site copies, restores and recovery on booted Debian 12 hosts (run as root).

Issue #12's "Measure" section. Boots a baked bookworm site host and a backup machine (restic behind the forced
``rclone serve restic --stdio --append-only``, as the runbook and tests/e2e/test_offsite.py set it up), provisions the
example site with ``sum.offsite`` and releases v1, fills its database with bench_db.py's rows (about 500 MB at the
default 1.3 million) and generates --media-mb of media as the app's user (bench/media_gen.py: sum-acme, group caddy,
0640 files in 2750 directories; many small incompressible JPEG-like files, some large ones, some compressible text).
Then, each phase under --phases (all by default), recording this machine's load average with every figure:

- floor: ``pg_dump > /dev/null`` and reading the media tree once (``find media -type f -print0 | xargs -0 cat``), on
  the host as the deploy user, against ``fab db.backup`` (wall, task and step times), --runs times interleaved;
- offsite: the first ``fab offsite.copy``; then --change-pct % of the media's bytes rewritten or added, the nightly
  ``fab db.backup`` and the second ``fab offsite.copy``: seconds, restic's data_added, the bytes that crossed the
  backup machine's link (its veth, counted on this machine) and the growth of the repository directory;
- restore: the site's downtime under --rate requests/s through Caddy (bench_restore.py's measure) for
  ``fab db.restore`` and the runbook's ``restore_db.sh``, --restore-runs times each; and ``db.restore --with-media``
  when this checkout has it (site restores);
- recover: the site host is stopped; a bare second host is provisioned (not timed), its key added on the backup
  machine, then ``fab offsite.recover --i-know-this-will-overwrite`` is timed and its steps split into download,
  release, database restore and the backup and copy after; the site is checked healthy through Caddy, with the row
  count and the media tree's sha256 (contents, modes, owners) as before.

    python bench/bench_site.py [--db-rows 1300000] [--media-mb 1000] [--runs 3] [--restore-runs 3]
                               [--phases floor,offsite,restore,recover] [--max-runner-load 1.5]

A smoke test: ``--db-rows 20000 --media-mb 30 --runs 1 --restore-runs 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

from bench_db import FILL, quote, sql
from bench_restore import ENV, Kind, measure, runbook_script, spread
from e2e_support import site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import Client, make_client
from sum_tasks.testing.hosts import NETNS_DIR, PREFIX, TestHost, boot_host, boot_hosts
from sum_tasks.testing.load import health_through_caddy

ROOT = "/srv/sum/acme"
APP = "sum-acme"
DUMP = "pg_dump --format=plain --no-owner --no-privileges --clean --if-exists"
# A site restore's staging area (media/.sum-restore: what it staged, what it replaced) is not media: left out of both.
SKIP = "-path ./.sum-restore -prune -o"
READ_MEDIA = f"cd {ROOT}/media && find . {SKIP} -type f -print0 | xargs -0 cat > /dev/null"
# Contents of every file, then type, mode, owner and group of every entry: equal trees give equal digests.
MEDIA_DIGEST = (f"cd {ROOT}/media && find . {SKIP} -type f -print0 | sort -z | xargs -0 -r sha256sum | sha256sum | cut -c1-16 && "
                f"find . {SKIP} -printf '%y %m %u %g %p\\n' | sort | sha256sum | cut -c1-16 && "
                f"find . {SKIP} -type f -printf '%s\\n' | awk '{{n++; s+=$1}} END {{print n, s}}'")
SITE_REPO = f"{ROOT}/backups/site.restic"  # the site backups' restic repository on the host, once there is one
DUMP_RE = re.compile(r"\(dump ([\d.]+)s, verify")
MEDIA_RE = re.compile(r"media: snapshot .* in ([\d.]+)s; site repository checked")
STEP_RE = re.compile(r"^  (ok|changed|would change|FAILED)\s+(.*?) \((\d+\.\d+)s\)(?:  (.*))?$")
SUMMARY_RE = re.compile(r"^\[[^\]]+\] (.*?): .* steps in (\d+\.\d+)s$")
PHASES = ("floor", "offsite", "restore", "recover")


# ---------------------------------------------------------------- the machine


def runner_load() -> str:
    """This machine's load averages (1, 5, 15 minutes) and the other test hosts up on it."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}, {len(list(NETNS_DIR.glob(f'{PREFIX}*')))} test hosts up"


@dataclass
class Quiet:
    """Before each measured figure, wait (up to `wait` s) until the 1-minute load average is below `limit`."""

    limit: float | None
    wait: float
    notes: list[str] = field(default_factory=list)

    def __call__(self, what: str) -> str:
        if self.limit is not None:
            deadline = time.monotonic() + self.wait
            while os.getloadavg()[0] > self.limit and time.monotonic() < deadline:
                time.sleep(2)
            if os.getloadavg()[0] > self.limit:
                self.notes.append(f"{what}: load stayed above {self.limit:g} for {self.wait:g}s, measured anyway")
        return runner_load()


# ---------------------------------------------------------------- on the hosts


def on_host(host: TestHost, command: str, user: str = "deploy", timeout: float = 3600) -> tuple[float, str]:
    """Seconds `command` took on the host (its own clock) as `user` with the site's database environment; and its output."""
    script = (f"{ENV}set -o pipefail; s=$(date +%s.%N); {{ {command}; }} > /tmp/bench-site.out; e=$(date +%s.%N); "
              'cat /tmp/bench-site.out; echo "@@ $s $e"')
    out = host.ssh(f"bash -c {quote(script)}", user=user, timeout=timeout).stdout
    body, _, stamps = out.rpartition("@@ ")
    start, end = (float(x) for x in stamps.split())
    return end - start, body


def roomy_srv(host: TestHost, gb: float) -> None:
    """A tmpfs of `gb` GB on /srv before provision: the host's / is an overlay whose upper layer is a tmpfs of a quarter
    of this machine's RAM (5.9 GB here), too small for the media, its staged and replaced copies, the site repository and
    the dumps of a full-size run. Both are RAM: this only lifts the cap."""
    if gb:
        host.ssh(f"mount -t tmpfs -o size={gb:g}G,mode=0755 bench-srv /srv")


def media_digest(host: TestHost) -> str:
    """sha256 of the media files' contents, of their modes and owners, the file count and bytes."""
    return " ".join(host.ssh(MEDIA_DIGEST, timeout=1200).stdout.split())


def generate(host: TestHost, mode: str, amount: float, seed: int) -> str:
    """media_gen.py on the host as the app's user: `make` MB of media, or `change` a percentage of it."""
    return host.ssh(f"runuser -u {APP} -- python3 - {ROOT}/media {mode} {amount:g} {seed}",
                    input=(BENCH / "media_gen.py").read_text(), timeout=3600).stdout.strip()


def link_bytes(host: TestHost) -> tuple[int, int]:
    """Bytes sent to and received from `host` on its link, counted on this machine's end of its veth."""
    base = Path("/sys/class/net") / f"{host.netns}-h" / "statistics"
    return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())


def dir_bytes(host: TestHost, path: str) -> int:
    """Bytes under `path` on `host` (0 when there is none)."""
    return int(host.ssh(f"du -sb {path} 2>/dev/null || echo 0").stdout.split()[0])


def repo_bytes(backup: TestHost) -> int:
    return dir_bytes(backup, "/srv/restic/acme")


# ---------------------------------------------------------------- what fab printed


@dataclass
class Fab:
    """One timed `fab` run: wall seconds (this machine), the task's own time, its steps (name, seconds, notes)."""

    wall: float
    task: float
    steps: list[tuple[str, float, str]]
    out: str
    load: str

    def step(self, prefix: str) -> float:
        return sum(s for name, s, _ in self.steps if name.startswith(prefix))


def timed_fab(client: Client, load: str, *args: str) -> Fab:
    started = time.monotonic()
    out = client.fab(*args, timeout=7200).stdout
    wall = time.monotonic() - started
    steps, task = [], 0.0
    for line in out.splitlines():
        if m := STEP_RE.match(line):
            steps.append((m.group(2), float(m.group(3)), m.group(4) or ""))
        elif m := SUMMARY_RE.match(line):
            task = float(m.group(2))
    return Fab(wall, task, steps, out, load)


def backup_figure(fab: Fab, pattern: re.Pattern[str]) -> float | None:
    """A figure from the notes of a db.backup's backup step (None when it has none)."""
    found = next((m for _, _, notes in fab.steps if (m := pattern.search(notes))), None)
    return float(found.group(1)) if found else None


def steps_text(fab: Fab) -> str:
    return "; ".join(f"{name} {seconds:.2f}s" + (f" ({notes})" if notes else "") for name, seconds, notes in fab.steps)


def offsite_status(host: TestHost) -> dict[str, str]:
    line = host.ssh(f"cat {ROOT}/backups/.offsite", check=False).stdout.strip()
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def has_site_restore(client: Client) -> bool:
    """Whether this checkout's db.restore restores media too (`--with-media`)."""
    return "with-media" in client.fab("--help", "db.restore").stdout


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


# ---------------------------------------------------------------- the phases


@dataclass
class Bench:
    args: argparse.Namespace
    site: TestHost
    backup: TestHost
    client: Client
    quiet: Quiet
    tmp: Path
    offsite_config: dict[str, str]
    lines: list[str] = field(default_factory=list)
    new: TestHost | None = None

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def floor(self) -> None:
        dumps, reads, backups, grew = [], [], [], []
        for number in range(1, self.args.runs + 1):
            self.site.ssh("sync && runuser -u postgres -- psql -XAqc CHECKPOINT")
            load = self.quiet(f"floor run {number}")
            dump = on_host(self.site, f"{DUMP} > /dev/null")[0]
            read = on_host(self.site, READ_MEDIA)[0]
            dumps.append(dump)
            reads.append(read)
            self.say(f"  floor run {number}: pg_dump > /dev/null {dump:.2f}s, read media once {read:.2f}s; {load}")
            self.site.ssh("sync && runuser -u postgres -- psql -XAqc CHECKPOINT")
            before = dir_bytes(self.site, SITE_REPO)
            fab = timed_fab(self.client, self.quiet(f"db.backup run {number}"), "-H", "deploy@vps", "db.backup")
            grew.append(dir_bytes(self.site, SITE_REPO) - before)
            backups.append(fab)
            self.say(f"  db.backup run {number}: wall {fab.wall:.2f}s, task {fab.task:.2f}s; site repository grew {mb(grew[-1])}; "
                     f"{steps_text(fab)}; {fab.load}")
        floors = [d + r for d, r in zip(dumps, reads, strict=True)]
        floor = statistics.median(floors)
        rows = [("`fab db.backup`: wall", [f.wall for f in backups]), ("its task time", [f.task for f in backups]),
                ("the script's dump (+ compress + write)", [backup_figure(f, DUMP_RE) for f in backups]),
                ("the media snapshot into the site repository (+ its check)", [backup_figure(f, MEDIA_RE) for f in backups])]
        self.say("\n| floor and backup (seconds) | run 1 | runs 2.. (min / median / max) | x floor (median of runs 2..) |")
        self.say("| --- | --- | --- | --- |")
        self.say(f"| `pg_dump > /dev/null` | {dumps[0]:.2f} | {spread(dumps[1:])} | |")
        self.say(f"| read the media tree once | {reads[0]:.2f} | {spread(reads[1:])} | |")
        self.say(f"| floor: the two, one after the other | {floors[0]:.2f} | {spread(floors[1:])} | 1.00 (floor {floor:.2f}s, all runs) |")
        for title, values in rows:
            if any(v is not None for v in values):
                later = [v for v in values[1:] if v is not None]
                ratio = f"{statistics.median(later) / floor:.2f}" if later else ""
                self.say(f"| {title} | {values[0] if values[0] is None else f'{values[0]:.2f}'} | {spread(later)} | {ratio} |")
        self.say(f"| site repository grew (MB) | {grew[0] / 1e6:.1f} | {spread([g / 1e6 for g in grew[1:]], '')} | |")
        self.say()

    def copy(self, label: str) -> None:
        tx, rx = link_bytes(self.backup)
        repo = repo_bytes(self.backup)
        fab = timed_fab(self.client, self.quiet(label), "-H", "deploy@vps", "offsite.copy")
        tx2, rx2 = link_bytes(self.backup)
        repo2 = repo_bytes(self.backup)
        status = offsite_status(self.site)
        added = mb(int(status["data_added"])) if status.get("data_added", "").isdigit() else "-"
        rest = " ".join(f"{k}={v}" for k, v in status.items() if k not in ("at", "snapshot", "dump", "seconds", "data_added"))
        self.say(f"| {label} | {fab.wall:.2f} | {fab.task:.2f} | {status.get('seconds', '?')} | {added} | "
                 f"{mb(tx2 - tx)} / {mb(rx2 - rx)} | {mb(repo2 - repo)} | {rest} | {fab.load} |")

    def offsite(self) -> None:
        self.say("| off-site copy | wall s | task s | restic s (status line) | data_added | link bytes to / from the backup machine "
                 "| repository grew | the rest of its status line | load |")
        self.say("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        self.copy("first copy")
        changed = generate(self.site, "change", self.args.change_pct, 2)
        before = dir_bytes(self.site, SITE_REPO)
        fab = timed_fab(self.client, self.quiet("nightly backup"), "-H", "deploy@vps", "db.backup")
        grew = dir_bytes(self.site, SITE_REPO) - before
        self.copy(f"second copy, after {self.args.change_pct:g}% of media changed and the nightly backup")
        self.say(f"\nmedia change: {changed}; the nightly db.backup between the copies: wall {fab.wall:.2f}s, "
                 f"task {fab.task:.2f}s, site repository grew {mb(grew)}; {steps_text(fab)}; {fab.load}\n")

    def restore(self) -> None:
        out = self.client.fab("-H", "deploy@vps", "db.backup").stdout
        path = re.search(rf"({ROOT}/backups/\S+?),", out).group(1)
        name = path.rsplit("/", 1)[-1]
        restore = ("-H", "deploy@vps", "db.restore", "--file", name, "--i-know-this-will-overwrite")
        actions = {"new": lambda: self.client.fab(*restore).stdout,
                   "runbook": lambda: self.site.ssh(f"bash -c {quote(runbook_script(self.site, path))}", user="deploy", timeout=1800).stdout}
        kinds = {"new": Kind("`fab db.restore` (database only)"), "runbook": Kind("the runbook's `restore_db.sh`")}
        if has_site_restore(self.client):
            actions["site"] = lambda: self.client.fab(*restore[:-1], "--with-media", restore[-1]).stdout
            kinds["site"] = Kind("`fab db.restore --with-media` (database and media)")
        loads: dict[str, list[str]] = {k: [] for k in kinds}
        for number in range(1, self.args.restore_runs + 1):
            for kind, action in actions.items():
                loads[kind].append(self.quiet(f"restore {kind} run {number}"))
                self.say(f"  restore run {number}, {kind}: {loads[kind][-1]}")
                run, _ = measure(self.site, self.args.rate, 1.0, action)
                kinds[kind].runs.append(run)
                rows = sql(self.site, "SELECT count(*) FROM notes", ENV)
                if rows != str(self.args.db_rows):
                    raise SystemExit(f"after {kind}: {rows} rows in notes, expected {self.args.db_rows}")
        self.say(f"\n| restore of {name} under {self.args.rate:g} requests/s (min / median / max) | down: no good answer | failed requests "
                 "| slowest request | whole command | app down (switch) | load at each start |")
        self.say("| --- | --- | --- | --- | --- | --- | --- |")
        for kind, found in kinds.items():
            runs = found.runs
            downs = [r.down for r in runs if r.down is not None]
            self.say(f"| {found.title} | {spread([r.gap for r in runs])} | {', '.join(str(r.failed) for r in runs)} | "
                     f"{spread([r.slowest for r in runs])} | {spread([r.took for r in runs])} | {spread(downs)} | "
                     f"{'; '.join(x.split(',')[0] for x in loads[kind])} |")
        self.say()

    def recover(self) -> None:
        source = self.site
        rows = sql(source, "SELECT count(*) FROM notes", ENV)
        digest = media_digest(source)
        done: list[tuple[Fab, dict[str, float]]] = []
        for number in range(1, self.args.recover_runs + 1):
            source.shutdown()
            self.new = new = boot_host("bookworm")
            roomy_srv(new, self.args.srv_tmpfs_gb)
            client = make_client(self.tmp / "site", site_config(new, offsite=self.offsite_config), {"vps": (new, "root")})
            started = time.monotonic()
            client.fab("provision")
            provisioned = time.monotonic() - started
            line = client.fab("-H", "deploy@vps", "offsite.key").stdout.strip().splitlines()[-1]
            self.backup.ssh(f"echo {quote(line)} >> ~restic/.ssh/authorized_keys")
            tx, rx = link_bytes(self.backup)
            fab = timed_fab(client, self.quiet(f"recover run {number}"), "-H", "deploy@vps", "offsite.recover", "--i-know-this-will-overwrite")
            tx2, rx2 = link_bytes(self.backup)
            status, body = health_through_caddy(new.ip, "acme.test")
            got_rows, got_digest = sql(new, "SELECT count(*) FROM notes", ENV), media_digest(new)
            ok = status == 200 and got_rows == rows and got_digest == digest
            parts = recovery_parts(fab)
            done.append((fab, parts))
            self.say(f"  recovery run {number} onto a bare provisioned host ({new.ip}; provision took {provisioned:.1f}s, not counted): "
                     f"wall {fab.wall:.1f}s, task {fab.task:.1f}s; {fab.load}")
            self.say(f"    healthy: /health/ {status} {json.dumps(body)[:60]}; rows {got_rows} (were {rows}); media {got_digest} "
                     f"(was {digest}): {'SAME' if ok else 'DIFFERENT'}; fetched from the backup machine {mb(rx2 - rx)} "
                     f"(sent to it {mb(tx2 - tx)})")
            self.say(f"    steps: {steps_text(fab)}")
            if not ok:
                raise SystemExit("the recovered site differs from the original")
            source = new
        self.say(f"\n| recovery, {len(done)} run(s) (min / median / max) | seconds |\n| --- | --- |")
        for name in PARTS:
            self.say(f"| {name} | {spread([p[name] for _, p in done])} |")
        self.say(f"| whole `fab offsite.recover` (wall) | {spread([f.wall for f, _ in done])} |")
        self.say(f"| bare provisioned host to healthy with data and media (wall, less the backup and copy after) | "
                 f"{spread([f.wall - p[PARTS[-1]] for f, p in done])} |")
        self.say()


PARTS = ("download: restore the snapshot (dump and media into place)", "release (venv, migrate, start, switch, smoke)",
         "database restore (verify, load beside, check, switch, safety dump)", "backup and off-site copy after")


def recovery_parts(fab: Fab) -> dict[str, float]:
    """offsite.recover's steps summed into PARTS, in the order it runs them."""
    parts, phase = dict.fromkeys(PARTS, 0.0), 0
    for name, seconds, _ in fab.steps:
        if phase == 0 and name == "state":
            phase = 1
        elif phase == 1 and name.startswith("verify "):
            phase = 2
        elif phase == 2 and (name in ("backup", "site backup") or name.startswith("off-site copy")):
            phase = 3
        parts[PARTS[phase]] += seconds
    return parts


def setup(args: argparse.Namespace, tmp: Path, quiet: Quiet) -> Bench:
    site, backup = boot_hosts({"suite": "bookworm"}, {"suite": "bookworm"})
    backup.ssh("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rclone restic >/dev/null", timeout=900)
    backup.ssh("useradd -m -s /bin/sh restic && install -d -o restic -g restic -m 0700 /srv/restic ~restic/.ssh")
    host_key = " ".join(backup.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
    roomy_srv(site, args.srv_tmpfs_gb)
    offsite = {"target": f"restic@{backup.ip}", "host_key": host_key, "password_file": str(tmp / "secrets" / "acme.restic-password")}
    build_site_repo(tmp / "site")
    client = make_client(tmp / "site", site_config(site, offsite=offsite), {"vps": (site, "root")})
    client.fab("provision")
    line = client.fab("-H", "deploy@vps", "offsite.key").stdout.strip().splitlines()[-1]
    backup.ssh(f"echo {quote(line)} > ~restic/.ssh/authorized_keys && chown restic:restic ~restic/.ssh/authorized_keys")
    client.fab("-H", "deploy@vps", "release", "--ref", "v1")
    bench = Bench(args, site, backup, client, quiet, tmp, offsite)
    started = time.monotonic()
    site.ssh(f"bash -c {quote(ENV + 'psql -X -q -v ON_ERROR_STOP=1 -f -')}", user="deploy", input=FILL.format(rows=args.db_rows), timeout=3600)
    filled = time.monotonic() - started
    started = time.monotonic()
    made = generate(site, "make", args.media_mb, 1)
    generated = time.monotonic() - started
    size = sql(site, "SELECT pg_size_pretty(pg_database_size(current_database()))", ENV)
    kinds = site.ssh(f"cd {ROOT}/media && for d in *; do printf '%s ' \"$d\"; find \"$d\" -type f | wc -l | tr '\\n' ' '; "
                     "du -sb \"$d\" | cut -f1; done").stdout.strip().replace("\n", "; ")
    modes = site.ssh(f"cd {ROOT}/media && find . -type d -printf '%m %u:%g\\n' | sort | uniq -c; "
                     "find . -type f -printf '%m %u:%g\\n' | sort | uniq -c").stdout.split("\n")
    compressed = site.ssh(f"cd {ROOT} && tar -c media | zstd -1 -T0 | wc -c", timeout=1200).stdout.strip()
    bench.say(f"site host {site.ip}, backup machine {backup.ip}; {site.ssh('nproc').stdout.strip()} cores; "
              f"{site.ssh('. /etc/os-release; echo $PRETTY_NAME').stdout.strip()}, "
              f"{site.ssh('psql --version').stdout.strip()}, {site.ssh('restic version').stdout.split(' compiled')[0]}")
    bench.say(f"database: {args.db_rows:,} rows, {size} (filled in {filled:.0f}s); media: {made} (generated in {generated:.0f}s): "
              f"{kinds}; zstd -1 of the tree: {mb(int(compressed))}")
    bench.say(f"media modes (count, mode, owner): {' | '.join(' '.join(m.split()) for m in modes if m.strip())}")
    bench.say(f"where the files live: / {site.ssh('findmnt -no FSTYPE,SIZE /').stdout.strip()} (the database; an overlay whose "
              f"upper layer is a tmpfs), /srv {site.ssh('findmnt -no FSTYPE,SIZE /srv || echo on /').stdout.strip()} (media, "
              "dumps, repositories): all in RAM, so there is no page cache to drop")
    bench.say(f"runner: {runner_load()}\n")
    return bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-rows", type=int, default=1_300_000, help="bench_db.py's text rows (1.3 million: about 500 MB)")
    parser.add_argument("--media-mb", type=float, default=1000.0, help="media to generate, MB (10^6 bytes)")
    parser.add_argument("--change-pct", type=float, default=1.0, help="media bytes changed between the two off-site copies, %%")
    parser.add_argument("--runs", type=int, default=3, help="floor and db.backup runs")
    parser.add_argument("--restore-runs", type=int, default=3, help="restores of each kind")
    parser.add_argument("--recover-runs", type=int, default=1, help="recoveries, each onto a new bare host")
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s through Caddy during each restore")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--max-runner-load", type=float, default=None,
                        help="before each measured figure, wait until this machine's 1-minute load average is below this")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="longest wait for --max-runner-load, seconds")
    parser.add_argument("--srv-tmpfs-gb", type=float, default=16.0,
                        help="mount a tmpfs this large on the site hosts' /srv before provision (0: leave / alone)")
    parser.add_argument("--out", default="", help="also write the figures to this file")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"--phases: unknown {', '.join(sorted(unknown))}")
    if "recover" in phases and "offsite" not in phases:
        phases.insert(0, "offsite")  # a recovery needs a copy of this site's data off the host
    if os.geteuid() != 0:
        parser.error("run as root: it boots test hosts with systemd-nspawn")
    quiet = Quiet(args.max_runner_load, args.quiet_wait)
    commit = subprocess.run(["git", "-C", str(BENCH), "log", "-1", "--format=%h %s"], check=False, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp:
        bench = setup(args, Path(tmp), quiet)
        try:
            bench.say(f"checkout: {commit}; {' '.join(sys.argv)}\n")
            for phase in [p for p in PHASES if p in phases]:
                bench.say(f"## {phase}  ({runner_load()})\n")
                getattr(bench, phase)()
            for note in quiet.notes:
                bench.say(f"note: {note}")
            return 0
        finally:
            if args.out:
                Path(args.out).write_text("\n".join(bench.lines) + "\n")
            for host in (bench.site, bench.backup, getattr(bench, "new", None)):
                if host is not None:
                    host.shutdown()


if __name__ == "__main__":
    sys.exit(main())
