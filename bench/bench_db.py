#!/usr/bin/env python3
"""Benchmark db.backup and db.restore against their floors on a booted Debian 12 host (run as root).

Boots a baked bookworm test host, provisions it, fills the site database with about 500 MB of
text rows, then times, on the host and in the same run (median of --runs):

- backup floor ``pg_dump > /dev/null``; the backup script per format (dump + compress + write;
  verification reported separately), with the backup's size;
- restore floor ``psql -f plain.sql`` (the uncompressed dump); the script's one-transaction
  restore per format (verification and the safety backup reported separately).

The kinds run interleaved, each after a CHECKPOINT, so a checkpoint or a busy neighbour does
not land on one kind only.

    python bench/bench_db.py [--rows 1300000] [--runs 3] [--keep-host]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sum_tasks.commands.backup import first
from sum_tasks.testing.client import make_client
from sum_tasks.testing.hosts import TestHost, boot_host

SLUG = "bench"
SCRIPT = f"/usr/local/bin/sum-{SLUG}-db"


def site_env(slug: str) -> str:
    """Shell that puts the site's database credentials from its .env into psql's and pg_dump's environment."""
    return (f'set -a; . /srv/sum/{slug}/.env; set +a; export PGPASSWORD="$DJANGO_DB_PASSWORD" PGHOST="$DJANGO_DB_HOST" '
            'PGPORT="$DJANGO_DB_PORT" PGUSER="$DJANGO_DB_USER" PGDATABASE="$DJANGO_DB_NAME"; ')


ENV = site_env(SLUG)
FILL = """
CREATE TABLE notes (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL, created timestamptz NOT NULL DEFAULT now());
INSERT INTO notes (id, title, body)
  SELECT g, 'Note ' || g || ' ' || md5(g::text),
         md5(g::text) || ' lorem ipsum dolor sit amet ' || md5((g * 7)::text) || ' ' || md5((g * 13)::text)
         || ' consectetur adipiscing elit ' || md5((g * 17)::text) || ' ' || repeat('sed do eiusmod ', 3) || md5((g * 31)::text)
  FROM generate_series(1, {rows}) g;
CREATE INDEX notes_created ON notes (created);
CREATE TABLE tags (id serial PRIMARY KEY, name text UNIQUE);
INSERT INTO tags (name) SELECT 'tag ' || g FROM generate_series(1, 1000) g;
"""
FORMATS = ("gzip", "zstd")
DUMP = "pg_dump --format=plain --no-owner --no-privileges --clean --if-exists"


def timed(host: TestHost, command: str) -> tuple[float, str]:
    """Wall time of `command` as the deploy user, measured on the host; and its output."""
    script = f"{ENV}TIMEFORMAT=%R; {{ time {{ {command}; }} ; }} 2>/tmp/bench.time >/tmp/bench.out; cat /tmp/bench.out; echo \"@@$(cat /tmp/bench.time)\""
    out = host.ssh(f"bash -c {quote(script)}", user="deploy", timeout=1800).stdout
    body, _, seconds = out.rpartition("@@")
    return float(seconds.strip().splitlines()[-1]), body


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def sql(host: TestHost, query: str, env: str = ENV) -> str:
    """One value from the site database, as the deploy user."""
    return host.ssh(f"bash -c {quote(env + 'psql -XAt -f -')}", user="deploy", input=query + ";\n").stdout.strip()


def rounds(host: TestHost, commands: dict[str, str], runs: int) -> dict[str, list[tuple[float, str]]]:
    """Each command `runs` times, interleaved, each after a checkpoint: (wall seconds, output) per run."""
    results: dict[str, list[tuple[float, str]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            host.ssh("sync && runuser -u postgres -- psql -XAqc CHECKPOINT")
            results[name].append(timed(host, command))
    return results


def seconds(results: list[tuple[float, str]]) -> float:
    return statistics.median(r[0] for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-host", action="store_true", help="leave the host running (prints its address)")
    args = parser.parse_args()

    host = boot_host("bookworm")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            key = host.key_path.with_suffix(".pub").read_text().strip()
            config = {"site_slug": SLUG, "domains": ["bench.test"], "project_module": "benchsite", "tls": "internal",
                      "hosts": ["vps"], "authorized_keys": [key]}
            make_client(Path(tmp) / "client", config, {"vps": (host, "root")}).fab("provision")
        started = time.monotonic()
        host.ssh(f"bash -c {quote(ENV + 'psql -X -q -v ON_ERROR_STOP=1 -f -')}", user="deploy", input=FILL.format(rows=args.rows), timeout=1800)
        size = sql(host, "SELECT pg_size_pretty(pg_database_size(current_database()))")
        host.ssh(f"bash -c {quote(ENV + DUMP + ' > /tmp/plain.sql')}", user="deploy", timeout=1800)
        plain = int(host.ssh("stat -c %s /tmp/plain.sql").stdout)
        print(f"database: {args.rows:,} rows, {size}; plain dump {plain / 1e6:.1f} MB (filled in {time.monotonic() - started:.0f}s); "
              f"host {host.ip}, {host.ssh('nproc').stdout.strip()} cores; median of {args.runs}\n")

        backups = {"floor": f"{DUMP} > /dev/null", **{fmt: f"{SCRIPT} backup --format {fmt} --keep 100" for fmt in FORMATS},
                   "pigz": f"{DUMP} | pigz -1 > /tmp/other.gz"}
        got = rounds(host, backups, args.runs)
        floor = seconds(got["floor"])
        rows = [("backup floor: pg_dump > /dev/null", floor, 1.0, "", "")]
        files = {fmt: first(got[fmt][-1][1], "BACKUP") for fmt in FORMATS}
        for fmt in FORMATS:
            dump = statistics.median(float(first(out, "BACKUP")["dump_seconds"]) for _, out in got[fmt])
            verify = statistics.median(float(first(out, "BACKUP")["verify_seconds"]) for _, out in got[fmt])
            rows.append((f"db.backup {fmt}: dump+compress+write", dump, dump / floor, f"{int(files[fmt]['size']) / 1e6:.1f} MB",
                         f"then verify {verify:.2f}s; whole script {seconds(got[fmt]):.2f}s"))
        other = int(host.ssh("stat -c %s /tmp/other.gz").stdout)
        rows.append(("  for comparison: pg_dump | pigz -1", seconds(got["pigz"]), seconds(got["pigz"]) / floor, f"{other / 1e6:.1f} MB", ""))
        restores = {"floor": "psql -X -q -v ON_ERROR_STOP=1 -f /tmp/plain.sql > /dev/null",
                    **{fmt: f"{SCRIPT} restore {files[fmt]['file']} --verified" for fmt in FORMATS}}
        got = rounds(host, restores, args.runs)
        floor = seconds(got["floor"])
        rows.append(("restore floor: psql -f plain.sql", floor, 1.0, "", ""))
        for fmt in FORMATS:
            verify = rounds(host, {fmt: f"{SCRIPT} verify {files[fmt]['file']}"}, args.runs)[fmt]
            rows.append((f"db.restore {fmt}: one transaction", seconds(got[fmt]), seconds(got[fmt]) / floor, "",
                         f"verify before it {seconds(verify):.2f}s; safety backup: the {fmt} whole script above"))
        count = sql(host, "SELECT count(*) FROM notes")
        assert count == str(args.rows), f"restored row count {count}"

        print(f"{'what':<48} {'seconds':>8} {'x floor':>8} {'size':>10}  notes")
        for name, took, ratio, size_text, notes in rows:
            print(f"{name:<48} {took:>8.2f} {ratio:>8.2f} {size_text:>10}  {notes}")
        print("\ntargets: gzip backup <= 2.0x, zstd backup <= 1.3x, restore <= 1.3x of its floor")
        return 0
    finally:
        if args.keep_host:
            print(f"host left running at {host.ip} (key {host.key_path})")
        else:
            host.shutdown()


if __name__ == "__main__":
    sys.exit(main())
