#!/usr/bin/env python3
"""Benchmark how long a restore keeps the site down, under load through Caddy, on a booted Debian 12 host (run as root).

Boots a baked bookworm test host, builds the example site's repo, provisions it and releases v1, fills
the site database with `bench_db.py`'s text rows (about 500 MB at the default 1.3 million), takes one
backup with `fab db.backup`, then restores that backup --runs times with each of, interleaved:

- ``new``: ``fab db.restore --file F --i-know-this-will-overwrite`` (this checkout): the backup is
  loaded into ``restore-<db>`` and checked while the site serves; the app stops only for the rename;
- ``runbook``: what the agency runbook's ``restore_db.sh`` does, run on the host as the deploy user:
  stop gunicorn, ``gunzip -c F | psql`` (the dump's own ``--clean --if-exists``, autocommit), start
  gunicorn, poll ``/health/`` until it answers 200;
- ``old`` (with ``--old-tree DIR``, a directory holding an earlier ``sum_tasks`` package, for example
  ``git archive 1608793 sum_tasks | tar -x -C DIR``): that version's ``fab db.restore``, which stopped
  the app, took a safety dump, then restored into the live database in one transaction.

During each, `Load` sends --rate requests/s to the home page through Caddy (from --margin seconds
before to --margin seconds after). Reported per kind, min / median / max: the longest time with no
good answer (what a visitor saw as downtime: requests that failed or waited in Caddy, which holds
a request up to 5 s while the app is away), the failed requests and their longest run, the slowest
request, the whole command's time, and for ``new`` the app-down time its switch step reports.

    python bench/bench_restore.py [--rows 1300000] [--runs 3] [--rate 40] [--old-tree DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# bench/ and tests/ are not packages: bench_db, e2e_support and site_repo come from there.
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

from bench_db import FILL, quote, site_env, sql
from e2e_support import live_colour, site_config
from site_repo import build_site_repo

from sum_tasks.commands import health
from sum_tasks.configuration import load_site
from sum_tasks.testing.client import make_client
from sum_tasks.testing.hosts import TestHost, boot_host
from sum_tasks.testing.load import Load

BACKUPS = "/srv/sum/acme/backups"
ENV = site_env("acme")
LOAD_WORKERS = 16  # enough threads to keep the rate while requests wait in Caddy


@dataclass
class Run:
    gap: float
    failed: int
    total: int
    run: int
    run_seconds: float
    slowest: float
    took: float
    down: float | None = None


@dataclass
class Kind:
    title: str
    runs: list[Run] = field(default_factory=list)


def runbook_script(host: TestHost, path: str) -> str:
    """restore_db.sh's steps, as the deploy user on the host: stop the live colour, gunzip | psql, start it, wait for /health/."""
    site = load_site(site_config(host))
    colour = site.paths.colour(live_colour(host))
    unit, wait = colour.unit, health.wait_script(site, colour.socket, site.health_timeout)
    return (f"{ENV}set -eo pipefail; sudo -n /usr/bin/systemctl stop {quote(unit)}; "
            f"gunzip -c {quote(path)} | psql -X -q -o /dev/null 2>/dev/null; "
            f"sudo -n /usr/bin/systemctl start {quote(unit)}; {wait} >/dev/null; "
            "[ \"$(printf '%s' \"$out\" | tail -n 1)\" = 200 ]")


def measure(host: TestHost, rate: float, margin: float, action) -> tuple[Run, str]:
    """`action()` under load; what the load saw, and what the action printed."""
    host.ssh("sync && runuser -u postgres -- psql -XAqc CHECKPOINT")
    with Load(host.ip, "acme.test", rate=rate, workers=LOAD_WORKERS) as load:
        time.sleep(margin)
        started = time.monotonic()
        out = action()
        took = time.monotonic() - started
        time.sleep(margin)
    count, seconds = load.failure_run()
    down = re.search(r"app down ([\d.]+)s", out)
    run = Run(load.longest_gap(), load.failed, load.total, count, seconds, load.slowest(), took, float(down.group(1)) if down else None)
    print(f"    {load.downtime()}; {took:.1f}s in all" + (f"; app down {run.down:.2f}s (the switch's own figure)" if down else ""),
          flush=True)
    return run, out


def spread(values: list[float], unit: str = "s") -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}{unit}" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s through Caddy during each restore")
    parser.add_argument("--margin", type=float, default=1.0, help="seconds of load before and after each restore")
    parser.add_argument("--old-tree", default="", help="a directory holding an earlier sum_tasks package, timed as 'old'")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: it boots a test host with systemd-nspawn")
    if args.old_tree and not (Path(args.old_tree) / "sum_tasks" / "__init__.py").is_file():
        parser.error(f"--old-tree {args.old_tree}: no sum_tasks package there")

    host = boot_host("bookworm")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
            build_site_repo(Path(tmp) / "site")
            client = make_client(Path(tmp) / "site", site_config(host), {"vps": (host, "root")})
            client.fab("provision")
            client.fab("-H", "deploy@vps", "release", "--ref", "v1")
            started = time.monotonic()
            host.ssh(f"bash -c {quote(ENV + 'psql -X -q -v ON_ERROR_STOP=1 -f -')}", user="deploy",
                     input=FILL.format(rows=args.rows), timeout=3600)
            size = sql(host, "SELECT pg_size_pretty(pg_database_size(current_database()))", ENV)
            out = client.fab("db.backup").stdout
            path = re.search(rf"({BACKUPS}/\S+?),", out).group(1)
            dump = int(host.ssh(f"stat -c %s {path}").stdout)
            print(f"\ndatabase: {args.rows:,} rows, {size}; backup {path.rsplit('/', 1)[-1]}, {dump / 1e6:.1f} MB "
                  f"(filled in {time.monotonic() - started:.0f}s); host {host.ip}, {host.ssh('nproc').stdout.strip()} cores; "
                  f"{args.rate:g} requests/s\n", flush=True)

            restore = ("db.restore", "--file", path.rsplit("/", 1)[-1], "--i-know-this-will-overwrite")
            actions = {
                "new": lambda: client.fab(*restore).stdout,
                "runbook": lambda: host.ssh(f"bash -c {quote(runbook_script(host, path))}", user="deploy", timeout=1800).stdout,
            }
            kinds = {"new": Kind("db.restore (this checkout): load beside, switch by renaming"),
                     "runbook": Kind("the runbook's restore_db.sh: stop, gunzip piped to psql, start")}
            if args.old_tree:
                actions["old"] = lambda: client.fab(*restore, env={"PYTHONPATH": str(Path(args.old_tree).resolve())}).stdout
                kinds["old"] = Kind("db.restore before: stop, safety dump, restore in one transaction, start")
            for number in range(1, args.runs + 1):
                for name, action in actions.items():
                    print(f"  run {number}, {name}:", flush=True)
                    run, _ = measure(host, args.rate, args.margin, action)
                    kinds[name].runs.append(run)
                    rows = sql(host, "SELECT count(*) FROM notes", ENV)
                    if rows != str(args.rows):
                        raise SystemExit(f"after {name}: {rows} rows in notes, expected {args.rows}")

            print(f"\nrestore of a {size} database ({dump / 1e6:.1f} MB gzip dump) under {args.rate:g} requests/s, "
                  f"{args.runs} runs each, min / median / max:\n")
            print("| kind | down: no good answer | failed requests (longest run) | slowest request | whole command | app down (switch) |")
            print("| --- | --- | --- | --- | --- | --- |")
            for kind in kinds.values():
                runs = kind.runs
                failed = " / ".join(f"{r.failed} ({r.run_seconds:.1f}s)" for r in runs)
                downs = [r.down for r in runs if r.down is not None]
                print(f"| {kind.title} | {spread([r.gap for r in runs])} | {failed} | {spread([r.slowest for r in runs])} | "
                      f"{spread([r.took for r in runs])} | {spread(downs)} |")
            return 0
    finally:
        host.shutdown()


if __name__ == "__main__":
    sys.exit(main())
