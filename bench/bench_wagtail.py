#!/usr/bin/env python3
"""The Wagtail example (``examples/wagtail``) on one booted Debian 13 host: release and rollback times with and without
Celery, and its idle memory, live colour, warm standby and Celery worker (run as root).

The site is provisioned from the example's own ``fabric.yaml`` (``tls: internal`` instead of ACME, the host's libmagic
package), released at ``v1`` and ``v2`` so a warm standby runs, and left alone for --settle seconds before memory is
read: RSS (``ps``), PSS and USS (``/proc/<pid>/smaps_rollup``) summed over each unit's processes (gunicorn's master and
workers; celery's main process and its pool). PSS splits shared file pages with everything that maps them, other test
hosts booted from the same tree included, so on this machine it reads low; USS is what stopping the unit gives back.

Then, for ``celery: true`` and ``celery: false`` in turn, --runs releases (alternating v1 and v2, the venv already
built) and --runs rollbacks, each timed by the task's own summary line (``... steps in N s``) and its ``switch`` step,
each started once the site is idle (no unit starting or stopping, then --pause seconds).

    PYTHONPATH=/work/main:/work/main/tests python3 bench/bench_wagtail.py [--runs 5] [--settle 20] [--suite trixie]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_release import SUMMARY_RE, parse_steps, spread
from e2e_support import site_config
from isolation_memory import Mem, measure, triple, unit_pids
from site_repo import STUDIO_SOURCE, build_studio_repo

from sum_tasks.commands.health import socket_colour
from sum_tasks.testing.client import Client, make_client
from sum_tasks.testing.hosts import TestHost, boot_host

LIBMAGIC = {"trixie": "libmagic1t64", "bookworm": "libmagic1"}
SLUG = "studio"


def task_seconds(output: str) -> float:
    found = SUMMARY_RE.search(output)
    if not found:
        raise SystemExit(f"no summary line in:\n{output[-2000:]}")
    return float(found["seconds"])


def step_seconds(output: str, name: str) -> float:
    return next((seconds for step, seconds in parse_steps(output) if step == name), float("nan"))


def memory(host: TestHost) -> dict[str, Mem]:
    """Live colour, warm standby and (when running) the Celery worker."""
    live = socket_colour(host.ssh(f"readlink /srv/sum/{SLUG}/live.sock").stdout)
    running = host.ssh(f"systemctl list-units --plain --no-legend --state=active 'sum-{SLUG}-gunicorn@*.service'").stdout.split()
    colours = [u.split("@")[1].split(".")[0] for u in running if u.endswith(".service")]
    standby = next((c for c in colours if c != live), "")
    found = {"live colour": measure(host, unit_pids(host, f"sum-{SLUG}-gunicorn@{live}.service"))}
    found["warm standby"] = measure(host, unit_pids(host, f"sum-{SLUG}-gunicorn@{standby}.service")) if standby else Mem()
    found["celery worker"] = measure(host, unit_pids(host, f"sum-{SLUG}-celery.service"))
    return found


def settle(host: TestHost, pause: float) -> None:
    """Until no unit of the site is starting or stopping (the worker's warm shutdown included), then `pause` seconds for
    what started last (a Celery worker importing Wagtail) to finish booting: each run starts from an idle site."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and host.ssh(
            f"systemctl list-units --plain --no-legend --state=activating,deactivating 'sum-{SLUG}-*'").stdout.strip():
        time.sleep(0.2)
    time.sleep(pause)


def timings(host: TestHost, client: Client, runs: int, pause: float) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"release": [], "release switch": [], "rollback": []}
    for i in range(runs):
        settle(host, pause)
        out = client.fab("release", "--ref", "v1" if i % 2 == 0 else "v2").stdout
        figures["release"].append(task_seconds(out))
        figures["release switch"].append(step_seconds(out, "switch"))
        print(f"  release  {figures['release'][-1]:.2f}s (switch {figures['release switch'][-1]:.2f}s)", flush=True)
    for _ in range(runs):
        settle(host, pause)
        out = client.fab("rollback").stdout
        figures["rollback"].append(task_seconds(out))
        print(f"  rollback {figures['rollback'][-1]:.2f}s", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds the site idles before memory is read")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds of quiet before each release and rollback")
    parser.add_argument("--suite", choices=sorted(LIBMAGIC), default="trixie")
    args = parser.parse_args(argv)

    example = yaml.safe_load((STUDIO_SOURCE / "fabric.yaml").read_text())["sum"]
    with tempfile.TemporaryDirectory() as work, boot_host(suite=args.suite) as host:
        build_studio_repo(Path(work) / "studio")
        config = {**example, **site_config(host, site_slug=SLUG, project_module="studio", tls="internal"), "domains": ["studio.test"],
                  "redirects": {}, "apt_packages": [LIBMAGIC[args.suite]]}
        client = make_client(Path(work) / "studio", config, {"vps": (host, "root")})
        client.fab("provision")
        client.fab("release", "--ref", "v1")
        client.fab("release", "--ref", "v2")
        time.sleep(args.settle)
        mem = memory(host)
        results = {}
        for celery in (True, False):
            print(f"celery: {str(celery).lower()}", flush=True)
            client.configure({**config, "celery": celery})
            client.fab("provision")
            results[celery] = timings(host, client, args.runs, args.pause)

    print(f"\nWagtail example on {args.suite}, {args.runs} runs each; seconds, median / min / max")
    print("| | with celery | without celery |\n| --- | --- | --- |")
    for name in ("release", "release switch", "rollback"):
        print(f"| {name} (task) | {spread(results[True][name])} | {spread(results[False][name])} |")
    print(f"\nIdle memory after {args.settle:g}s, MB RSS/PSS/USS")
    for name, figure in mem.items():
        print(f"| {name} | {figure.procs} processes | {triple(figure)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
