"""One command to see sum_tasks work: a throwaway Debian host, provisioned, with the example site live.

    python -m sum_tasks.testing.demo          # boot, provision, release v1; the host stays up
    python -m sum_tasks.testing.demo down     # power it off and remove everything the demo made

Needs Linux, root and the tools of the test harness (see docs/testing.md), and runs
from a checkout of the library: it deploys ``examples/client`` with the real ``fab`` commands.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import yaml

from .client import LIBRARY_ROOT, make_client
from .hosts import HostBootError, TestHost, boot_host, boot_problem, kept_hosts, shutdown_kept
from .load import health_through_caddy
from .trees import SUITES, TREES_DIR, ensure_tree, say, tree_name

EXAMPLE = LIBRARY_ROOT / "examples" / "client"
SITE_REPO_SCRIPT = LIBRARY_ROOT / "tests" / "site_repo.py"
DEFAULT_DIR = Path("/var/tmp/sum-demo")
DEFAULT_NAME = "sum-demo"
MARKER = ".sum-demo"
DOMAINS = ["acme.test", "www.acme.test"]
TICK = 10.0

T = TypeVar("T")


class DemoError(RuntimeError):
    """A demo step failed; the message says which and what to look at."""


def _load_site_repo() -> ModuleType:
    """``tests/site_repo.py`` of this checkout: builds the example site's git repo with its tags."""
    if not EXAMPLE.is_dir() or not SITE_REPO_SCRIPT.is_file():
        raise DemoError(f"the demo runs from a checkout of sum-tasks: {EXAMPLE} or {SITE_REPO_SCRIPT} is missing")
    spec = importlib.util.spec_from_file_location("sum_tasks_demo_site_repo", SITE_REPO_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_ticker(title: str, fn: Callable[[], T], status: Callable[[], str]) -> T:
    """Run `fn`, printing `title` with the elapsed time and `status()` every few seconds."""
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(TICK):
            detail = status()
            say(f"  ... {title}: {time.monotonic() - started:.0f}s{': ' + detail if detail else ''}")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        return fn()
    finally:
        done.set()
        ticker.join()


def _build_log_tail(suite: str) -> str:
    """The last line of the tree build log being written, if any tree is being built."""
    for baked in (False, True):
        name = tree_name(suite, baked)
        log = TREES_DIR / f"{name}.log"
        if not (TREES_DIR / name).is_dir() and log.is_file():
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            return f"{name}: {lines[-1][:100]}" if lines else name
    return ""


def _fab_command() -> str:
    """How the operator runs fab on this machine."""
    return "fab" if shutil.which("fab") else f"{shlex.quote(sys.executable)} -m fabric"


def _fab(directory: Path, *args: str) -> None:
    """Run the real `fab ARGS` in `directory`, its output streaming to this terminal."""
    print(f"\n$ cd {directory} && fab {' '.join(shlex.quote(a) for a in args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "fabric", *args], cwd=directory, stdin=subprocess.DEVNULL, check=False)
    if result.returncode:
        raise DemoError(f"fab {' '.join(args)} exited {result.returncode}; its output is above")


def _demo_config(host: TestHost, fabric_yaml: dict[str, Any]) -> dict[str, Any]:
    """The example's `sum` settings with what a throwaway host needs instead."""
    return {
        **fabric_yaml["sum"],
        "domains": DOMAINS,
        "tls": "internal",            # no public DNS: Caddy's own CA
        "tls_email": "",
        "repo_url": "",               # `release` sends the commit from the local checkout
        "hosts": ["vps"],
        "authorized_keys": [host.key_path.with_suffix(".pub").read_text().strip()],
    }


def _write_client(site_dir: Path, host: TestHost) -> None:
    """Make the site repo a client dir: the example's fabfile.py, its fabric.yaml adapted to `host`, ssh_config."""
    example = yaml.safe_load((EXAMPLE / "fabric.yaml").read_text())
    sum_config = _demo_config(host, example)
    make_client(site_dir, sum_config, {"vps": (host, "root")}, fabfile=(EXAMPLE / "fabfile.py").read_text())
    written = yaml.safe_load((site_dir / "fabric.yaml").read_text())
    merged = {**{k: v for k, v in example.items() if k != "sum"}, **written}
    header = ("# Written by `python -m sum_tasks.testing.demo` from examples/client/fabric.yaml (read that one\n"
              "# for what each setting means) for a throwaway host: domains, tls, tls_email, repo_url, hosts,\n"
              "# authorized_keys and the ssh settings are the demo's.\n")
    (site_dir / "fabric.yaml").write_text(header + yaml.safe_dump(merged, sort_keys=False))


def fetch_health(ip: str, domain: str = DOMAINS[0]) -> dict[str, Any]:
    """GET https://<domain>/health/ from this machine, sent to `ip` (Caddy's internal CA is not checked)."""
    status, body = health_through_caddy(ip, domain)
    if status != 200:
        raise DemoError(f"/health/ answered {status}: {body}")
    return body


def _prepare_dir(directory: Path) -> None:
    """An empty work dir; only one an earlier demo made (it has the marker) is ever emptied."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise DemoError(f"{directory} exists, is not empty and was not made by the demo: pass --dir elsewhere")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by python -m sum_tasks.testing.demo; removed by `demo down`\n")


def up(directory: Path, name: str, suite: str, ref: str, keep_on_failure: bool = False) -> dict[str, Any]:
    """Boot, provision, release `ref`; returns what `demo.json` records. The host stays up."""
    started = time.monotonic()
    problem = boot_problem()
    if problem:
        raise DemoError(problem)
    site_repo = _load_site_repo()
    if shutil.which("git") is None:
        raise DemoError("git is needed to build the example site's repository (apt-get install git)")
    replaced = shutdown_kept(name)
    if replaced:
        say(f"shut down the earlier demo host {name}")
    _prepare_dir(directory)
    site_dir = directory / "site"
    say(f"work dir {directory}; building the example site's git repo in {site_dir}")
    tags = site_repo.build_site_repo(site_dir)
    if ref not in tags:
        raise DemoError(f"--ref {ref!r} is not one of the example site's tags: {', '.join(tags)}")

    say(f"making sure the {suite} trees are built (the first run builds them: a few minutes)")
    _with_ticker(f"{suite} trees", lambda: ensure_tree(suite, baked=True), lambda: _build_log_tail(suite))
    host = boot_host(suite, name=name, keep=True)
    try:
        _write_client(site_dir, host)
        _fab(site_dir, "provision")
        _fab(site_dir, "-H", "deploy@vps", "release", "--ref", ref)
        health = fetch_health(host.ip)
        if health.get("status") != "ok" or health.get("version", {}).get("git_sha") != tags[ref]:
            raise DemoError(f"/health/ does not show {ref} ({tags[ref]}) ok: {health}")
    except BaseException:
        if keep_on_failure:
            say(f"the host {name} ({host.ip}) is left up: python -m sum_tasks.testing.demo down --name {name}")
        else:
            host.shutdown()
        raise
    state = {"name": name, "suite": suite, "ip": host.ip, "netns": host.netns, "dir": str(directory),
             "site_dir": str(site_dir), "ref": ref, "tags": tags, "health": health,
             "seconds": round(time.monotonic() - started, 1)}
    (directory / "demo.json").write_text(json.dumps(state, indent=2) + "\n")
    return state


def _library_tasks() -> set[str]:
    from sum_tasks import namespace

    return set(namespace().task_names)


def summary(state: dict[str, Any], down_command: str) -> str:
    """What the newcomer reads at the end: the URL, the health JSON, what to try, how to tear down."""
    ip, site_dir, fab = state["ip"], state["site_dir"], _fab_command()
    tasks = _library_tasks()
    commands = [
        (f"{fab} status" if "status" in tasks else f"{fab} releases", "what is live, what came before"),
        *([(f"{fab} check", "the ops smoke checklist")] if "check" in tasks else []),
        (f"{fab} -H deploy@vps release --ref v1.2", "a new heading: venv reused, zero downtime"),
        (f"{fab} rollback", "back to the previous release, instantly"),
        (f"{fab} -H deploy@vps release --ref v2", "a new migration: a verified backup is taken first"),
        (f"{fab} db.backup", "a verified backup on the host"),
        (f"{fab} site.check-deploy", "the example repo's own task"),
        ("ssh -F ssh_config vps", "a root shell on the host"),
    ]
    width = max(len(command) for command, _ in commands) + 2
    tries = [f"{command:<{width}}# {why}" for command, why in commands]
    lines = [
        "",
        (f"=== the example site is live: {state['ref']} ({state['tags'][state['ref']][:12]}) on a throwaway "
         f"Debian host ({state['suite']}, {ip}), in {state['seconds']:.0f}s ==="),
        "",
        "/health/, fetched from this machine just now:",
        json.dumps(state["health"], indent=2),
        "",
        "See it (TLS is Caddy's internal CA, hence -k):",
        f"    curl -k --resolve {DOMAINS[0]}:443:{ip} https://{DOMAINS[0]}/",
        f"    curl -k --resolve {DOMAINS[0]}:443:{ip} https://{DOMAINS[0]}/health/",
        f"    or add '{ip} {' '.join(DOMAINS)}' to /etc/hosts and browse https://{DOMAINS[0]}/",
        "",
        f"Try more (the client repo is {site_dir}: the example's fabfile.py and fabric.yaml, tags v1 v1.2 v2 v3-reqs):",
        f"    cd {site_dir}",
        *(f"    {line}" for line in tries),
        "",
        f"Tear it down (the host stays up until then):\n    {down_command}",
        "",
    ]
    return "\n".join(lines)


def down(directory: Path, name: str) -> list[str]:
    """Shut down the kept hosts named `name` and remove the demo's work dir; returns what was removed."""
    removed = [f"host {n}" for n in shutdown_kept(name)]
    if directory.is_dir() and (directory / MARKER).exists():
        shutil.rmtree(directory)
        removed.append(str(directory))
    return removed


def main(argv: list[str] | None = None) -> int:
    """Command line: ``[up]`` (default) or ``down``."""
    parser = argparse.ArgumentParser(prog="python -m sum_tasks.testing.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=("up", "down", "status"), default="up")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"work dir (default {DEFAULT_DIR})")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"the host's name (default {DEFAULT_NAME})")
    parser.add_argument("--suite", choices=SUITES, default="bookworm", help="Debian release to boot (default bookworm)")
    parser.add_argument("--ref", default="v1", help="the example site's tag to release first (default v1)")
    parser.add_argument("--keep-on-failure", action="store_true", help="leave the host up when a step fails")
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    options = ("" if directory == DEFAULT_DIR else f" --dir {shlex.quote(str(directory))}") + \
              ("" if args.name == DEFAULT_NAME else f" --name {shlex.quote(args.name)}")
    try:
        if args.command == "down":
            started = time.monotonic()
            removed = down(directory, args.name)
            print(f"removed {', '.join(removed)} in {time.monotonic() - started:.1f}s" if removed
                  else f"no demo host named {args.name} is up and no demo dir at {directory}")
        elif args.command == "status":
            hosts = kept_hosts(args.name)
            print("\n".join(f"{h.name} {h.ip} ({h.suite}, {h.netns})" for h in hosts) or f"no demo host named {args.name} is up")
        else:
            state = up(directory, args.name, args.suite, args.ref, args.keep_on_failure)
            print(summary(state, f"python3 -m sum_tasks.testing.demo down{options}"), flush=True)
    except (DemoError, HostBootError) as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
