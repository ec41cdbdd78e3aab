#!/usr/bin/env python3
"""Measure what per-site isolation costs in memory: five sites on one booted Debian 12 host (run as root).

Each site has its own system user ``sum-<slug>``, its own Redis (``sum-<slug>-redis.service``, a
redis-server on a unix socket) and its gunicorn colours (``sum-<slug>-gunicorn@<colour>.service``).
The script boots one baked bookworm test host, measures it fresh (the host-wide
``redis-server.service`` the old design shared between sites included), provisions the sites
``s1``..``s5`` (domains ``s1.test``..``s5.test``, the default ``deploy`` login) and releases ``v1``
once on each, so only one gunicorn colour per site runs (a second release would leave the previous
colour running as the warm standby and double the gunicorn figures). After --settle seconds it reports:

- each site's Redis main process and gunicorn (master and workers): RSS (``ps -o rss=``), PSS and
  USS (``/proc/<pid>/smaps_rollup``: Pss, Private_Clean + Private_Dirty), and Redis's own
  ``used_memory``. Gunicorn runs with ``--preload``, so its workers share pages with the master: RSS
  counts them in each. PSS splits shared file pages between everything that maps them, other test
  hosts booted from the same cached tree included, so on this machine it reads low; USS is what
  ending the processes would give back, the same on a real VPS;
- the host before any site and after all of them: ``free -m`` used, and the sum of PSS over every
  process in the host (a systemd-nspawn container shows the whole machine's /proc/meminfo, so
  ``free`` also moves with whatever else runs on the machine);
- the cost of the system users: their /etc/passwd, /etc/shadow and /etc/group lines, no home,
  no login shell, no processes but their own Redis and gunicorn, no user manager (``user@UID``);
- per-site Redis against the old design's one shared redis-server.

    PYTHONPATH=/work/main:/work/main/tests python3 bench/isolation_memory.py [--sites 5] [--settle 10] [--detail] [--keep-host]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from e2e_support import site_config
from site_repo import build_site_repo

from sum_tasks.testing.client import make_client
from sum_tasks.testing.hosts import TestHost, boot_host

SHARED_REDIS = "redis-server.service"
# pid, ps rss, smaps_rollup Rss, Pss and Private_Clean + Private_Dirty (kB; 0 without smaps_rollup), elapsed, command name
MEASURE = r"""for p in {pids}; do
  [ -d /proc/$p ] || continue
  set -- $(awk '/^Rss:/{{r=$2}} /^Pss:/{{s=$2}} /^Private_(Clean|Dirty):/{{u+=$2}} END{{print r+0, s+0, u+0}}' /proc/$p/smaps_rollup 2>/dev/null)
  echo "$p $(ps -o rss= -p $p | tr -d ' ') ${{1:-0}} ${{2:-0}} ${{3:-0}} $(ps -o etime=,args= -p $p | cut -c1-90)"
done"""


@dataclass
class Mem:
    """Summed memory of a set of processes, in kB."""

    procs: int = 0
    rss: int = 0
    pss: int = 0
    uss: int = 0  # private pages only: what ending the processes would give back

    def __add__(self, other: Mem) -> Mem:
        return Mem(self.procs + other.procs, self.rss + other.rss, self.pss + other.pss, self.uss + other.uss)

    def __sub__(self, other: Mem) -> Mem:
        return Mem(self.procs - other.procs, self.rss - other.rss, self.pss - other.pss, self.uss - other.uss)


DETAIL: list[str] = []


def measure(host: TestHost, pids: list[str], label: str = "") -> Mem:
    """RSS (ps), PSS and USS (smaps_rollup) of `pids`, summed; with a label, each process is kept for --detail."""
    if not pids:
        return Mem()
    out = host.ssh(MEASURE.format(pids=" ".join(pids))).stdout
    mem = Mem()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[1].isdigit():  # a process gone between the loop and ps has no rss
            mem += Mem(1, int(fields[1]), int(fields[3]), int(fields[4]))
            if label:
                DETAIL.append(f"{label:<22} pid {fields[0]:>5} rss {mb(int(fields[1])):>6} pss {mb(int(fields[3])):>6} "
                              f"uss {mb(int(fields[4])):>6}  up {' '.join(fields[5:])}")
    return mem


def main_pid(host: TestHost, unit: str) -> str:
    """The unit's main pid ('' if it is not running)."""
    pid = host.ssh(f"systemctl show -p MainPID --value {unit}").stdout.strip()
    return "" if pid in ("", "0") else pid


def unit_pids(host: TestHost, unit: str) -> list[str]:
    """The unit's main process and its children (gunicorn's workers)."""
    pid = main_pid(host, unit)
    if not pid:
        return []
    return [pid, *host.ssh(f"ps -o pid= --ppid {pid}", check=False).stdout.split()]


def all_pids(host: TestHost) -> list[str]:
    """Every process in the host's pid namespace, except the ssh session measuring it."""
    out = host.ssh("for p in /proc/[0-9]*; do echo ${p#/proc/}; done; echo self=$$ parent=$PPID").stdout.split()
    me = {w.split("=")[1] for w in out if "=" in w}
    return [p for p in out if "=" not in p and p not in me]


def free_used(host: TestHost) -> tuple[int, int]:
    """`free -m`'s (total, used) MB as the host sees them."""
    line = next(line for line in host.ssh("free -m").stdout.splitlines() if line.startswith("Mem:"))
    total, used = line.split()[1:3]
    return int(total), int(used)


def snapshot(host: TestHost) -> tuple[int, int, Mem]:
    """(free total MB, free used MB, every process summed) of the host now."""
    total, used = free_used(host)
    return total, used, measure(host, all_pids(host))


def redis_used_memory(host: TestHost, slug: str) -> str:
    """The site Redis's own `used_memory_human`, asked as the site's user over its socket."""
    out = host.ssh(f"runuser -u sum-{slug} -- redis-cli -s /run/sum-{slug}-redis/redis.sock info memory", check=False).stdout
    found = re.search(r"^used_memory_human:(\S+)", out, re.MULTILINE)
    return found.group(1) if found else "?"


def users_report(host: TestHost, slugs: list[str]) -> list[str]:
    """What the system users themselves hold: account lines, home, shell, processes, user managers."""
    lines = []
    passwd = host.ssh("getent passwd " + " ".join(f"sum-{s}" for s in slugs)).stdout.splitlines()
    size = int(host.ssh("cat /etc/passwd /etc/shadow /etc/group /etc/gshadow | grep -c '^sum-' ; "
                        "grep -h '^sum-' /etc/passwd /etc/shadow /etc/group /etc/gshadow | wc -c").stdout.split()[1])
    lines.append(f"{len(passwd)} accounts, {size} bytes of lines in /etc/passwd, shadow, group, gshadow; e.g. {passwd[0]}")
    homes = [entry.split(":")[5] for entry in passwd]
    shells = sorted({entry.split(":")[6] for entry in passwd})
    present = host.ssh("for h in " + " ".join(homes) + "; do [ -e \"$h\" ] && echo \"$h\"; done; true").stdout.split()
    lines.append(f"homes {', '.join(sorted(set(homes)))} (present: {', '.join(present) or 'none'}); shells {', '.join(shells)}")
    stray = []
    for slug in slugs:
        owned = set(host.ssh(f"ps -o pid= -u sum-{slug}", check=False).stdout.split())
        services = set(unit_pids(host, f"sum-{slug}-redis.service"))
        for unit in active_gunicorn_units(host, slug):
            services |= set(unit_pids(host, unit))
        stray += sorted(owned - services)
    lines.append(f"processes owned by the users other than their Redis and gunicorn: {len(stray)} {' '.join(stray)}")
    uids = [entry.split(":")[2] for entry in passwd]
    managers = host.ssh("systemctl list-units --plain --no-legend 'user@*.service' 'user-runtime-dir@*.service'; "
                        "ls /var/lib/systemd/linger 2>/dev/null; true").stdout.split()
    mine = [m for m in managers if any(f"@{uid}.service" in m or m == f"sum-{s}" for uid in uids for s in slugs)]
    lines.append(f"user managers or lingering for them: {len(mine)} {' '.join(mine)} (all user units now: "
                 f"{' '.join(m for m in managers if m.startswith('user')) or 'none'})")
    return lines


def active_gunicorn_units(host: TestHost, slug: str) -> list[str]:
    out = host.ssh(f"systemctl list-units --plain --no-legend --state=active 'sum-{slug}-gunicorn@*.service'").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def triple(mem: Mem) -> str:
    return f"{mb(mem.rss)}/{mb(mem.pss)}/{mb(mem.uss)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait before each measurement")
    parser.add_argument("--keep-host", action="store_true", help="leave the host running (prints its address)")
    parser.add_argument("--detail", action="store_true", help="also print each measured Redis and gunicorn process")
    args = parser.parse_args()
    slugs = [f"s{n}" for n in range(1, args.sites + 1)]

    log = io.StringIO()
    started = time.monotonic()
    host = boot_host("bookworm", keep=args.keep_host)
    try:
        time.sleep(args.settle)
        before_total, before_used, before_all = snapshot(host)
        shared_pids = unit_pids(host, SHARED_REDIS)
        shared = measure(host, shared_pids, SHARED_REDIS)
        print(f"fresh host {host.ip} ({host.ssh('nproc').stdout.strip()} cores seen, free -m total {before_total} MB): "
              f"{SHARED_REDIS} pid {' '.join(shared_pids) or '-'}, {before_all.procs} processes")

        with tempfile.TemporaryDirectory() as tmp:
            for slug in slugs:
                took = time.monotonic()
                build_site_repo(Path(tmp) / slug)
                client = make_client(Path(tmp) / slug, site_config(host, site_slug=slug, domains=[f"{slug}.test"]),
                                     {"vps": (host, "root")})
                try:
                    with contextlib.redirect_stdout(log):
                        client.fab("provision")
                        client.fab("-H", "deploy@vps", "release", "--ref", "v1")
                except BaseException:
                    sys.stderr.write(log.getvalue()[-6000:])
                    raise
                print(f"  {slug}: provisioned and released v1 in {time.monotonic() - took:.0f}s")

        time.sleep(args.settle)
        rows = []
        total_redis, total_gunicorn = Mem(), Mem()
        for slug in slugs:
            redis = measure(host, unit_pids(host, f"sum-{slug}-redis.service"), f"sum-{slug}-redis")
            units = active_gunicorn_units(host, slug)
            gunicorn = Mem()
            for unit in units:
                gunicorn += measure(host, unit_pids(host, unit), unit.removesuffix('.service'))
            colours = ",".join(u.split("@")[1].removesuffix(".service") for u in units)
            rows.append((slug, redis, redis_used_memory(host, slug), colours, gunicorn))
            total_redis += redis
            total_gunicorn += gunicorn
        after_total, after_used, after_all = snapshot(host)
        shared_state = host.ssh(f"systemctl is-active {SHARED_REDIS}; systemctl is-enabled {SHARED_REDIS}", check=False).stdout.split()
        users = users_report(host, slugs)

        print(f"\nMB (RSS = ps -o rss=; PSS, USS = smaps_rollup Pss, Private_*); measured {args.settle:.0f}s after the last release; "
              "one release per site\n")
        print(f"{'site':<6} {'redis RSS/PSS/USS':>18} {'used_memory':>11} {'colours':>8} {'gunicorn procs':>14} {'gunicorn RSS/PSS/USS':>21}")
        for slug, redis, used, colours, gunicorn in rows:
            print(f"{slug:<6} {triple(redis):>18} {used:>11} {colours:>8} {gunicorn.procs:>14} {triple(gunicorn):>21}")
        print(f"{'all':<6} {triple(total_redis):>18} {'':>11} {'':>8} {total_gunicorn.procs:>14} {triple(total_gunicorn):>21}")
        print(f"\nold design's shared {SHARED_REDIS} on the fresh host: RSS/PSS/USS {triple(shared)} "
              f"({shared.procs} process); after: {' / '.join(shared_state)}")
        extra = total_redis - shared
        print(f"per-site Redis x{len(slugs)} minus the one shared: RSS {mb(extra.rss)} (counts the shared binary {len(slugs)} times), "
              f"USS {mb(extra.uss)} MB (counts it never; the binary's pages are there either way)")
        print(f"worst case by maxmemory: {len(slugs)} x 64 MB = {len(slugs) * 64} MB of data, plus each process's own")
        diff = after_all - before_all
        print(f"\nhost, every process summed: before {before_all.procs} procs, RSS {mb(before_all.rss)}, PSS {mb(before_all.pss)}; "
              f"after {after_all.procs} procs, RSS {mb(after_all.rss)}, PSS {mb(after_all.pss)}; "
              f"difference {diff.procs} procs, PSS {mb(diff.pss)}, USS {mb(diff.uss)} MB")
        print(f"free -m used (the whole machine's meminfo inside systemd-nspawn): before {before_used}, after {after_used}, "
              f"difference {after_used - before_used} MB (total {before_total} / {after_total} MB)")
        print("\nsystem users:")
        for line in users:
            print(f"  {line}")
        if args.detail:
            print("\nprocesses:")
            for line in DETAIL:
                print(f"  {line}")
        print(f"\nwhole run {time.monotonic() - started:.0f}s")
        return 0
    finally:
        if args.keep_host:
            print(f"host {host.name} left running at {host.ip} (key {host.key_path}); end it with "
                  f"python3 -c 'from sum_tasks.testing.hosts import shutdown_kept; shutdown_kept(\"{host.name}\")'")
        else:
            host.shutdown()


if __name__ == "__main__":
    sys.exit(main())
