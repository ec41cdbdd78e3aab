"""release and rollback: build beside the live release, start it on a free colour, switch once healthy.

Layout under ``/srv/sum/<slug>/``::

    releases/<id>/          one commit's files, .venv -> ../../venvs/<requirements hash>, .release.env
    venvs/<hash>/           one venv per distinct requirements.txt, shared by the releases that match it
    colours/<colour>        which release each gunicorn colour (blue, green, amber) runs
    colours/<colour>.env    sha256 of the .env the colour started with
    current                 the live release
    live.sock               the live colour's socket, which Caddy proxies to
    releases.jsonl          one record per release attempt

Between releases two colours run: the live one and, as the warm standby, the release before.
A release starts the third colour on the new code, waits for ``/health/`` on its own socket,
then renames `current` and `live.sock`: new connections go to the new colour while the old
one finishes what it has and stays up as the new standby (the old standby stops), so a
rollback to it is one more rename.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fabric import Connection
from invoke import Context, task
from invoke.exceptions import Exit

from .config import COLOURS, Site
from .db import backup as db_backup
from .envfile import in_site_env, site_psql
from .health import colour_socket, curl_smoke, parse_answer, socket_colour, wait_script
from .hooks import run_hooks
from .lock import site_lock
from .lock import unlock as unlock_site
from .output import Report, StepError
from .provision import project_dir
from .remote import host_label, one_by_one, parse_sections, q, run_with_input, targets, who

REF_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*@\{)(?!.*//)[A-Za-z0-9._/@+-]{1,200}(?<![./])(?<!\.lock)$")
GIT_REQ_RE = re.compile(r"git\+\S+?(?:@(?P<ref>[^#\s@/]+))?(?:#\S*)?$")
PINNED_REF_RE = re.compile(r"^(?:v?\d+(?:\.\d+)*(?:[-.+][A-Za-z0-9.]+)?|[0-9a-f]{7,40})$")
SOURCES = ("auto", "server", "local")
PENDING = 10
STANDBY_TIMEOUT = 3  # seconds a warm standby gets to answer /health/ before rollback starts the release afresh
UNHEALTHY = 9

MANAGE_SCRIPT = """\
import sys
import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

mode = sys.argv[1]
if mode == "ahead":
    loader = MigrationLoader(connection)
    for app, name in sorted(set(loader.applied_migrations) - set(loader.disk_migrations)):
        print("AHEAD", app, name)
    sys.exit(0)
executor = MigrationExecutor(connection)
plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
for migration, _ in plan:
    print("PENDING", migration.app_label, migration.name)
if plan and mode == "check":
    sys.exit(PENDING_EXIT)
if plan:
    call_command("migrate", interactive=False, verbosity=1)
call_command("collectstatic", interactive=False, verbosity=0)
""".replace("PENDING_EXIT", str(PENDING))


@dataclass(frozen=True)
class Layout:
    """Paths of one site's releases on the host."""

    root: str

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def records(self) -> str:
        return f"{self.root}/releases.jsonl"

    @property
    def repo(self) -> str:
        return f"{self.root}/repo.git"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    def venv(self, digest: str) -> str:
        return f"{self.root}/venvs/{digest}"

    @property
    def live_socket(self) -> str:
        return f"{self.root}/live.sock"

    def colour(self, colour: str) -> str:
        return f"{self.root}/colours/{colour}"

    def env_stamp(self, colour: str) -> str:
        return f"{self.root}/colours/{colour}.env"


def validate_ref(ref: str) -> str:
    """A git ref or commit as typed by the operator, checked before anything runs."""
    if not ref:
        raise Exit("release needs --ref: a tag, branch or commit (e.g. --ref v1.2)", code=2)
    if not REF_RE.fullmatch(ref):
        raise Exit(f"--ref {ref!r} is not a valid git ref name", code=2)
    return ref


def validate_source(source: str) -> str:
    if source not in SOURCES:
        raise Exit(f"--source must be one of {', '.join(SOURCES)} (got {source!r})", code=2)
    return source


def choose_source(site: Site, source: str) -> str:
    """`auto` means the server fetches repo_url when there is one, else the local checkout sends the commit."""
    if source == "auto":
        return "server" if site.repo_url else "local"
    if source == "server" and not site.repo_url:
        raise Exit("--source server needs sum.repo_url", code=2)
    return source


def new_release_id(sha: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}Z-{sha[:8]}"


def requirements_digest(requirements: bytes, python: str) -> str:
    """Which venv a release uses: one per interpreter and exact requirements.txt."""
    return hashlib.sha256(python.encode() + b"\0" + requirements).hexdigest()[:16]


def git_requirements(text: str) -> list[tuple[str, str]]:
    """(requirement line, ref or '') for every requirement installed from git."""
    found = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        match = GIT_REQ_RE.search(line)
        if match and not line.startswith("#"):
            found.append((line, match.group("ref") or ""))
    return found


def unpinned(text: str) -> list[str]:
    """Git requirements that follow a branch (or nothing) rather than a tag or commit."""
    return [line for line, ref in git_requirements(text) if not PINNED_REF_RE.match(ref)]


def parse_records(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "id" in record:
            records.append(record)
    return records


def good_releases(records: list[dict], present: set[str]) -> list[str]:
    """Ids of good releases still on disk, in the order they were last live (a rollback makes one live again)."""
    order: list[str] = []
    for record in records:
        if record.get("result") == "good" and record["id"] in present:
            if record["id"] in order:
                order.remove(record["id"])
            order.append(record["id"])
    return order


def prune_list(records: list[dict], present: set[str], live: str, keep: int, running: Iterable[str] = ()) -> list[str]:
    """Release dirs to delete: all but the newest `keep` good ones; never the live one, the one before it, or one `running`."""
    good = [r for r in good_releases(records, present) if r != live]
    protected = set(good[-(keep - 1):]) if keep > 1 else set()
    if good:
        protected.add(good[-1])
    protected |= {live, *running}
    return sorted(r for r in present if r not in protected)


def rollback_target(records: list[dict], present: set[str], live: str, to: str = "") -> str:
    """The release to go back to: `to` (an id, a ref or a commit), or the good one before the live one."""
    good = [r for r in good_releases(records, present) if r != live]
    if not to:
        if not good:
            raise Exit("no earlier good release to roll back to", code=1)
        return good[-1]
    by_id = {r["id"]: r for r in records}
    matches = [rid for rid in good if rid == to or by_id[rid].get("ref") == to or str(by_id[rid].get("sha", "")).startswith(to)]
    if not matches:
        raise Exit(f"--to {to!r} matches no good release on the host (see `fab releases`)", code=1)
    return matches[-1]


def backup_undoing(records: list[dict], target: str) -> str:
    """The pre-migration backup taken by the first release after `target` was last live that made one."""
    backup = ""
    for record in reversed(records):
        if record["id"] == target:
            return backup
        backup = record.get("backup") or backup
    return ""


class Host:
    """One site on one connection: the remote commands release and rollback are made of."""

    def __init__(self, c: Connection, site: Site, report: Report) -> None:
        self.c, self.site, self.report = c, site, report
        self.layout = Layout(site.root)

    def sh(self, script: str, what: str, hint: str = "", timeout: float | None = None) -> str:
        """Run as the connecting (deploy) user; a failure becomes a `StepError` with the output's tail."""
        result = self.c.run(f"sh -c {q(script)}", hide=True, warn=True, timeout=timeout)
        if not result.ok:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise StepError(f"{what} (exit status {result.exited})\n{tail}", hint)
        return result.stdout

    def systemctl(self, verb: str, colour: str) -> None:
        unit = self.unit(colour)
        result = self.c.run(f"sudo -n /usr/bin/systemctl {verb} {q(unit)}", hide=True, warn=True)
        if not result.ok:
            raise StepError(f"systemctl {verb} {unit} failed\n{result.stderr.strip()}", "check `fab logs` and the sudoers rule from provision")

    def unit(self, colour: str) -> str:
        return f"{self.site.unit_prefix}-gunicorn@{colour}.service"

    def journal(self, colour: str, lines: int = 15) -> str:
        out = self.c.run(f"journalctl -u {q(self.unit(colour))} -n {lines} --no-pager -o cat", hide=True, warn=True)
        return out.stdout.strip()

    def state_script(self, migrations: bool = False) -> str:
        """Shell printing the live release, each colour's release, records, release dirs (and the applied migrations)."""
        return (
            f"cd {q(self.site.root)} || exit 3\n"
            "echo @@current; readlink current\n"
            "echo @@live; readlink live.sock\n"
            "echo @@env; sha256sum < .env\n"
            + "".join(f"echo @@{c}; readlink colours/{c}\necho @@{c}.env; cat colours/{c}.env\n" for c in COLOURS)
            + f"echo @@active; systemctl is-active {' '.join(q(self.unit(c)) for c in COLOURS)}\n"
            "echo @@dirs; ls -1 releases\n"
            "echo @@building; ls -1d releases/*/.building releases/.incoming-*\n"
            "echo @@records; cat releases.jsonl\n"
            "echo @@venvs; ls -1 venvs\n"
            + (f"echo @@migrations; {migrations_script(self.site)}\n" if migrations else "")
        )

    def state(self) -> dict:
        """`parse_state` of `state_script`, in one round trip."""
        result = self.c.run(f"sh -c {q(self.state_script())} 2>/dev/null", hide=True, warn=True)
        if result.exited == 3:
            raise StepError(f"{self.site.root} does not exist", "run `fab provision` first")
        return parse_state(result.stdout)


def parse_state(stdout: str) -> dict:
    return state_from(parse_sections(stdout))


def state_from(sections: dict[str, str]) -> dict:
    """The state from `state_script`'s sections (`check` prints some of the same; what is missing reads as empty)."""
    active = sections.get("active", "").split()
    return {
        "current": link_name(sections.get("current", "")),
        "live": socket_colour(sections.get("live", "")),
        "env": sections.get("env", "").strip(),
        "colours": {c: link_name(sections.get(c, "")) for c in COLOURS},
        "env_stamps": {c: sections.get(f"{c}.env", "").strip() for c in COLOURS},
        "active": {c: (active[i] if i < len(active) else "") == "active" for i, c in enumerate(COLOURS)},
        "dirs": set(sections.get("dirs", "").split()),
        "building": [p.split("/")[1] for p in sections.get("building", "").split()],
        "records": parse_records(sections.get("records", "")),
        "venvs": sections.get("venvs", "").split(),
        "migrations": sections.get("migrations", "").strip(),
    }


def link_name(target: str) -> str:
    """The release id a symlink's target names (its last path component)."""
    return target.strip().rstrip("/").rsplit("/", 1)[-1]


def live_colour(state: dict) -> str:
    """The colour running the live release: the one `live.sock` names, else any that runs it (older layouts)."""
    running = [c for c in COLOURS if state["current"] and state["colours"][c] == state["current"]]
    return state.get("live", "") if state.get("live", "") in running else next(iter(running), "")


def standby_colour(state: dict) -> str:
    """The colour kept running, not live, on an earlier good release: the one most recently live if there are several."""
    live = live_colour(state)
    order = good_releases(state["records"], state["dirs"] - set(state["building"]))
    kept = [c for c in COLOURS if c != live and state["colours"][c] in order and state["colours"][c] != state["current"]]
    return max(kept, key=lambda c: order.index(state["colours"][c]), default="")


def free_colour(state: dict) -> str:
    """The colour a release (or a rollback with no warm standby) starts: neither live nor the standby, a stopped one first."""
    free = [c for c in COLOURS if c not in (live_colour(state), standby_colour(state))]
    return next((c for c in free if not state["active"][c]), free[0])


def warm_standby(state: dict, release_id: str) -> bool:
    """Whether the standby runs `release_id`, started with the .env the host has now."""
    colour = standby_colour(state)
    return (bool(colour) and state["colours"][colour] == release_id and state["active"][colour]
            and bool(state["env"]) and state["env_stamps"][colour] == state["env"])


def stale_colours(state: dict) -> list[str]:
    """Colours linked or running that are neither live nor the standby: what a killed task left."""
    keep = (live_colour(state), standby_colour(state))
    return [c for c in COLOURS if c not in keep and (state["colours"][c] or state["active"][c])]


def clean_up(h: Host, state: dict) -> list[str]:
    """Undo what a killed task left: a standby that runs no good release, `live.sock` astray, half-built dirs."""
    done, script = [], []
    live = live_colour(state)
    for colour in stale_colours(state):
        if state["active"][colour]:
            h.systemctl("stop", colour)
            done.append(f"stopped stale {colour}")
        if state["colours"][colour]:
            script.append(unlink_colour(h, colour))
    if state["current"] and not state["live"]:
        raise StepError(f"{h.layout.live_socket} is missing: this site was released by an older sum_tasks, whose Caddy "
                        "config proxies to the colours directly", "run `fab provision` once (it points Caddy at live.sock), then this task")
    if live and state["live"] != live:
        script.append(relink(h.layout.live_socket, colour_socket(h.site, live)))
        done.append(f"pointed live.sock at {live}")
        state["live"] = live
    for name in state["building"]:
        script.append(f"rm -rf {q(h.layout.releases + '/' + name)}")
        state["dirs"].discard(name)
        done.append(f"removed half-built {name}")
    if script:
        h.sh("\n".join(script), "clean up after an interrupted release")
    return done


def resolve_local(repo: str, ref: str) -> str:
    result = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StepError(f"ref {ref!r} does not resolve to a commit in the local checkout {repo}", "fetch it, or check the spelling")
    return result.stdout.strip()


def fetch_code(h: Host, ref: str, source: str, repo: str, staging: str) -> dict:
    """Put the commit `ref` names on the host as a new release dir; returns its sha, id, venv, dir, requirements, reused.

    `reused` is True when the venv for its requirements already exists. From the local checkout
    this is one command with `git archive` on its stdin; from the server's mirror, two commands.
    """
    lay, site = h.layout, h.site
    unpack = f"mkdir {q(staging)} && touch {q(staging)}/.building && "
    if source == "local":
        sha = resolve_local(repo, ref)
        git = ["git", "-C", repo]
        archive = subprocess.run([*git, "archive", "--format=tar.gz", sha], capture_output=True, check=True).stdout
        shown = subprocess.run([*git, "show", f"{sha}:requirements.txt"], capture_output=True, text=True, check=False)
        if shown.returncode != 0:
            raise StepError(f"{ref} has no requirements.txt", "the client repo needs a requirements.txt at its top level")
        requirements = shown.stdout
        unpack += f"tar -xzf - -C {q(staging)} && "
    else:
        url = site.repo_url
        out = h.sh(
            f"if [ -d {q(lay.repo)} ]; then git -C {q(lay.repo)} remote set-url origin {q(url)} && "
            f"git -C {q(lay.repo)} fetch --quiet --prune --tags origin '+refs/*:refs/*'; "
            f"else git clone --quiet --mirror {q(url)} {q(lay.repo)}; fi || exit 1\n"
            f"sha=$(git -C {q(lay.repo)} rev-parse --verify --quiet {q(ref + '^{commit}')}) || {{ echo @@nosuchref; exit 0; }}\n"
            f"echo @@sha; echo \"$sha\"; {unpack}git -C {q(lay.repo)} archive --format=tar \"$sha\" | tar -x -C {q(staging)} && "
            f"echo @@requirements && cat {q(staging)}/requirements.txt",
            f"fetch {url} and unpack {ref}", "check the server's deploy key can read sum.repo_url, and that the commit has a requirements.txt",
        )
        if "@@nosuchref" in out:
            raise StepError(f"ref {ref!r} does not resolve to a commit in {url}", "push the tag or branch, or check the spelling")
        sections = parse_sections(out)
        sha, requirements, unpack, archive = sections["sha"].strip(), sections["requirements"], "", b""
    release = {"sha": sha, "id": new_release_id(sha), "venv": requirements_digest(requirements.encode(), site.python),
               "requirements": requirements}
    release["dir"] = lay.release(release["id"])
    venv = lay.venv(release["venv"])
    script = (
        f"{unpack}mv -T {q(staging)} {q(release['dir'])} && "
        f"printf 'GIT_SHA=%s\\nSUM_RELEASE_ID=%s\\n' {q(sha)} {q(release['id'])} > {q(release['dir'])}/.release.env && "
        f"ln -sfn {q(venv)} {q(release['dir'])}/.venv && if [ -e {q(venv)}/.complete ]; then echo reused; fi"
    )
    status, out, err = run_with_input(h.c, f"sh -c {q(script)}", archive)
    if status != 0:
        raise StepError(f"unpack and place the release (exit status {status})\n{err.strip()[-1500:]}")
    release["reused"] = out.strip() == "reused"
    return release


def build_venv(h: Host, venv: str, release_dir: str) -> None:
    """A new venv from the release's requirements.txt, never touching the live one."""
    h.sh(
        f"rm -rf {q(venv)} && {q(h.site.python)} -m venv {q(venv)} && "
        f"{q(venv)}/bin/pip install --disable-pip-version-check --no-input --progress-bar off -r {q(release_dir)}/requirements.txt && "
        f"touch {q(venv)}/.complete",
        "pip install -r requirements.txt", "read the pip output above; fix requirements.txt and release again", timeout=1800,
    )


def manage(h: Host, release_dir: str, mode: str) -> tuple[int, str]:
    """Run the migration/collectstatic script in the release with the site's environment."""
    script = f"{in_site_env(h.site, release_dir)} && exec .venv/bin/python -c {q(MANAGE_SCRIPT)} {mode}"
    result = h.c.run(f"sh -c {q(script)}", hide=True, warn=True)
    return result.exited, result.stdout + result.stderr


def pending_migrations(output: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("PENDING ")]


CODE_ONLY = (".py", ".html", ".txt", ".md", ".rst")


def needs_django(changed: list[str]) -> bool:
    """Whether files changed between two commits can need migrate or collectstatic (same requirements).

    Only Python code and templates outside migrations and settings can change without either; any
    other file (CSS, JS, images, anything a STATICFILES_DIRS may hold) runs them.
    """
    for path in changed:
        parts = path.split("/")
        if "migrations" in parts or "static" in parts or any(part.startswith("settings") for part in parts):
            return True
        if not path.endswith(CODE_ONLY):
            return True
    return False


def changed_files(h: Host, source: str, repo: str, old: str, new: str) -> list[str] | None:
    """Paths that differ between two commits, or None when that cannot be told."""
    if source == "local":
        result = subprocess.run(["git", "-C", repo, "diff", "--name-only", old, new], capture_output=True, text=True, check=False)
        return result.stdout.splitlines() if result.returncode == 0 else None
    result = h.c.run(f"git -C {q(h.layout.repo)} diff --name-only {q(old)} {q(new)}", hide=True, warn=True)
    return result.stdout.splitlines() if result.ok else None


def switched_text(colour: str, old: str, retire: str) -> str:
    return f"{colour} live" + (f", {old} kept as the warm standby" if old else "") + (f", {retire} stopping" if retire else "")


def relink(link: str, target: str) -> str:
    """Shell that points the symlink `link` at `target` with one rename."""
    return f"ln -sfn {q(target)} {q(link)}.tmp && mv -T {q(link)}.tmp {q(link)}"


def start_colour(h: Host, colour: str, release_dir: str) -> None:
    """Point `colour` at the release, (re)start it, and wait for /health/ on its own socket (one round trip)."""
    unit, lay = q(h.unit(colour)), h.layout
    script = (
        f"{relink(lay.colour(colour), release_dir)} && "
        f"{{ sudo -n /usr/bin/systemctl reset-failed {unit} 2>/dev/null; sudo -n /usr/bin/systemctl restart {unit}; }} && "
        + wait_script(h.site, colour_socket(h.site, colour), h.site.health_timeout)
    )
    result = h.c.run(f"sh -c {q(script)}", hide=True, warn=True, timeout=h.site.health_timeout + 60)
    if not result.ok:
        raise StepError(f"{colour} did not start (exit status {result.exited})\n{result.stderr.strip()}\n{h.journal(colour)}",
                        "the previous release is still serving; the lines above say why (the app failing to import, "
                        "or sudo refusing: then run provision)")
    health = parse_answer(result.stdout)
    if not health.ok:
        body = health.body.strip()[:300]
        raise StepError(
            f"the new release did not answer /health/ with 200 within {h.site.health_timeout}s: {health.describe()}"
            + (f"\n{body}" if body else "") + f"\n{h.journal(colour)}",
            "the previous release is still serving; fix the code and release again",
        )


def stop_colour(h: Host, colour: str) -> None:
    unit = q(h.unit(colour))
    h.c.run(f"sudo -n /usr/bin/systemctl stop {unit}; sudo -n /usr/bin/systemctl reset-failed {unit}; {unlink_colour(h, colour)}",
            hide=True, warn=True)


MIGRATIONS_SQL = "SELECT md5(coalesce(string_agg(app || '.' || name, ',' ORDER BY app, name), '')) FROM django_migrations"


def migrations_script(site: Site) -> str:
    """Shell printing a fingerprint of the migrations applied to the site's database (psql, no Django)."""
    return f"{site_psql(site, MIGRATIONS_SQL)} 2>/dev/null"


def last_fingerprint(records: list[dict], release_id: str) -> str:
    """The migrations fingerprint recorded the last time `release_id` went live knowing every applied migration."""
    return next((r.get("migrations", "") for r in reversed(records) if r["id"] == release_id and r.get("migrations")), "")


def unlink_colour(h: Host, colour: str) -> str:
    """Shell removing `colour`'s release link (so nothing starts it again) and its .env hash."""
    return f"rm -f {q(h.layout.colour(colour))} {q(h.layout.env_stamp(colour))}"


def retire_script(h: Host, colour: str) -> str:
    """Shell that stops `colour` in the background and unlinks it."""
    return f"sudo -n /usr/bin/systemctl --no-block stop {q(h.unit(colour))} && {unlink_colour(h, colour)}"


def switch(h: Host, release_dir: str, colour: str, retire: str = "", gate: bool = False, migrations: bool = True) -> str | None:
    """Make the release current and send new connections to `colour` (two renames in one command).

    With `gate`, only once `colour` answers /health/ with 200 within a few seconds; None if it does
    not, and nothing changed. The colour that served keeps running as the warm standby unless it is
    `retire`d. Once `current` names the new release nothing undoes it: a failure after the renames
    (restarting celery) is a warning, never a reason to stop the colour now serving.
    Returns the fingerprint of the migrations applied (with `migrations`), recorded so a later
    rollback can skip Django.
    """
    lay = h.layout
    after = [retire_script(h, retire)] if retire else []
    if h.site.celery:
        after.append(f"sudo -n /usr/bin/systemctl restart {q(h.site.unit_prefix + '-celery.service')}")
    script = (f"rm -f {q(release_dir)}/.building && {relink(lay.current, release_dir)} && "
              f"{relink(lay.live_socket, colour_socket(h.site, colour))} && echo @@switched && "
              + "".join(f"{command} && " for command in after) + "echo @@migrations"
              + (f"; {migrations_script(h.site)}" if migrations else ""))
    if gate:
        script = (wait_script(h.site, colour_socket(h.site, colour), STANDBY_TIMEOUT)
                  + f'; [ "$(printf %s "$out" | tail -n 1)" = 200 ] || exit {UNHEALTHY}; ' + script)
    result = h.c.run(f"sh -c {q(script)}", hide=True, warn=True)
    if gate and result.exited == UNHEALTHY:
        return None
    if "@@switched" not in result.stdout:
        raise StepError(f"could not switch current (exit status {result.exited})\n{result.stderr.strip()[-300:]}")
    if "@@migrations" not in result.stdout:
        h.report.steps[-1].warn(f"switched, but finishing the switch failed: {result.stderr.strip()[-300:]}; see `fab status`")
        return ""
    return result.stdout.split("@@migrations", 1)[1].strip()


def record_and_prune(h: Host, state: dict, entry: dict) -> list[str]:
    """Append the release record; after a good release, delete old releases and the venvs nothing uses any more."""
    script = f"printf '%s\\n' {q(json.dumps(entry, sort_keys=True))} >> {q(h.layout.records)}"
    doomed: list[str] = []
    if entry.get("result") == "good":
        records = state["records"] + [entry]
        present = state["dirs"] | {entry["id"]}
        doomed = prune_list(records, present, entry["id"], h.site.keep_releases, [state["current"], *state["colours"].values()])
        kept = present - set(doomed)
        used = {r.get("venv") for r in records if r["id"] in kept}
        unused = [v for v in state["venvs"] if v not in used]
        paths = [h.layout.release(r) for r in doomed] + [h.layout.venv(v) for v in unused]
        if paths:
            script += " && rm -rf " + " ".join(q(p) for p in paths)
    h.sh(script, "write the release record")
    return doomed


def smoke_checks(h: Host, sha: str) -> None:
    """/health/ (reporting `sha`) and /sitemap.xml through Caddy on the host itself (no DNS needed), and from here when the domain resolves."""
    site = h.site
    with h.report.step("smoke check through caddy") as step:
        out = h.c.run(curl_smoke(site, "/sitemap.xml"), hide=True, warn=True).stdout
        sitemap, _, answer = out.partition("\n")
        health = parse_answer(answer)
        if not health.ok:
            step.warn(f"/health/ through Caddy: {health.describe()}; the release is live, check Caddy (`fab logs --service caddy`)")
        elif sha and health.sha and health.sha != sha:
            step.warn(f"/health/ through Caddy reports {health.sha[:12]}, not {sha[:12]}: Caddy is not proxying to live.sock "
                      "(run `fab provision`), or another server answers for this domain")
        else:
            step.note(health.describe())
        step.note(f"sitemap.xml HTTP {sitemap.strip() or 'no answer'} (not blocking)")
        step.note(remote_check(site))


def remote_check(site: Site) -> str:
    """/health/ from the operator's machine with requests, only when the domain resolves."""
    try:
        socket.getaddrinfo(site.primary_domain, None)
    except OSError:
        return f"{site.primary_domain} does not resolve here: no check from this machine"
    import requests

    scheme = "http" if site.tls == "off" else "https"
    try:
        response = requests.get(f"{scheme}://{site.primary_domain}/health/", timeout=5, verify=site.tls == "auto")
        return f"from here: HTTP {response.status_code}"
    except requests.RequestException as err:
        return f"from here: {type(err).__name__}"


def prepare(h: Host, state: dict, entry: dict, release_dir: str, source: str, repo: str, strict: bool, requirements: str) -> None:
    """Everything before the switch that needs the release's own code: pins, venv, migrations, static files."""
    site, report = h.site, h.report
    with report.step("python environment") as step:
        loose = unpinned(requirements)
        if loose and (strict or site.strict_pins):
            raise StepError("git requirements follow a branch, not a tag or commit:\n" + "\n".join(loose),
                            "pin them to a tag or commit (runbook section 10), or drop --strict")
        for line in loose:
            step.warn(f"git requirement not pinned to a tag or commit: {line}")
        venv = h.layout.venv(entry["venv"])
        if entry.pop("reused"):
            step.note("requirements unchanged: venv reused, nothing downloaded")
        else:
            build_venv(h, venv, release_dir)
            step.changed("built a new venv")
            for line in h.sh(f"{q(venv)}/bin/pip freeze --all", "pip freeze").splitlines():
                if "git+" in line:
                    step.note(f"from git: {line}")
    run_hooks(h.c, site, report, "before_migrate", release_dir, entry)
    live = next((r for r in state["records"] if r["id"] == state["current"]), {})
    with report.step("migrate and collectstatic") as step:
        if live.get("venv") == entry["venv"] and live.get("sha"):
            changed = changed_files(h, source, repo, live["sha"], entry["sha"])
            if changed is not None and not needs_django(changed):
                step.note("no migration, static file or settings changed since the live release: skipped")
                # Same migration files and venv as the live release: what it knew applied, this one knows too.
                entry["migrations"] = live.get("migrations", "")
                return
        status, output = manage(h, release_dir, "check")
        if status == PENDING:
            step.note(f"{len(pending_migrations(output))} pending migrations")
            entry["backup"] = db_backup(h.c, site, report, label="pre-" + entry["id"].lower())
            step.note(f"backup {entry['backup']}")
            status, output = manage(h, release_dir, "apply")
        if status != 0:
            tail = "\n".join(output.strip().splitlines()[-15:])
            raise StepError(f"migrate/collectstatic failed (exit status {status})\n{tail}",
                            "the previous release is still serving; fix the migration and release again")


def do_release(c: Connection, site: Site, ref: str, source: str, strict: bool, repo: str) -> dict:
    report = Report(f"release {ref}", host_label(c))
    h = Host(c, site, report)
    began = time.monotonic()
    entry: dict = {"ref": ref, "who": who(), "at": datetime.now(UTC).isoformat(timespec="seconds"), "backup": ""}
    with site_lock(c, site, f"release {ref}", then=h.state_script()) as out:
        with report.step("state") as step:
            state = parse_state(out)
            for note in clean_up(h, state):
                step.changed(note)
        old, colour, retire = live_colour(state), free_colour(state), standby_colour(state)
        staging = f"{h.layout.releases}/.incoming-{int(time.time() * 1000)}"
        release_dir, started, switched = "", False, False
        try:
            with report.step(f"fetch {ref} ({source})") as step:
                fetched = fetch_code(h, ref, source, repo, staging)
                requirements, release_dir = fetched.pop("requirements"), fetched.pop("dir")
                entry.update(fetched)
                step.note(f"{entry['sha'][:12]} as {entry['id']}")
            prepare(h, state, entry, release_dir, source, repo, strict, requirements)
            run_hooks(c, site, report, "before_switch", release_dir, entry)
            with report.step(f"start {colour} and wait for /health/"):
                started = True
                start_colour(h, colour, release_dir)
            with report.step("switch") as step:
                switched = True
                known = entry.get("migrations", "")
                fingerprint = switch(h, release_dir, colour, retire, migrations=not known)
                entry["migrations"] = known or fingerprint
                step.changed(switched_text(colour, old, retire))
        except BaseException:
            if switched:
                raise
            failed = report.steps[-1].name if report.steps else "release"
            if started:
                stop_colour(h, colour)
            if release_dir:
                h.c.run(f"rm -f {q(release_dir)}/.building && touch {q(release_dir)}/.failed", hide=True, warn=True)
            else:
                h.c.run(f"rm -rf {q(staging)}", hide=True, warn=True)
            if "id" in entry:
                entry.pop("reused", None)
                entry.update(result=f"failed: {failed}", seconds=round(time.monotonic() - began, 2), colour=colour)
                record_and_prune(h, state, entry)
            run_hooks(c, site, report, "after_failure", release_dir or site.root, {**entry, "step": failed})
            raise
        entry.update(result="good", seconds=round(time.monotonic() - began, 2), colour=colour)
        with report.step("record and prune") as step:
            removed = record_and_prune(h, state, entry)
            if removed:
                step.changed(f"removed {len(removed)} old releases")
        run_hooks(c, site, report, "after_switch", release_dir, entry)
    smoke_checks(h, str(entry.get("sha") or ""))
    report.summary(f"{entry['id']} live ({entry['sha'][:12]})")
    return entry


def do_rollback(c: Connection, site: Site, to: str, force: bool) -> dict:
    report = Report("rollback" + (f" --to {to}" if to else ""), host_label(c))
    h = Host(c, site, report)
    began = time.monotonic()
    with site_lock(c, site, "rollback", then=h.state_script(migrations=True)) as out:
        with report.step("state") as step:
            state = parse_state(out)
            for note in clean_up(h, state):
                step.changed(note)
            live = state["current"]
            target = rollback_target(state["records"], state["dirs"], live, to)
            step.note(f"{live or 'nothing'} -> {target}")
        target_dir = h.layout.release(target)
        by_id = {r["id"]: r for r in state["records"]}
        entry = {**{k: by_id[target].get(k) for k in ("ref", "sha", "venv")}, "id": target, "who": who(), "rollback": True,
                 "at": datetime.now(UTC).isoformat(timespec="seconds"), "backup": ""}
        with report.step("database migrations") as step:
            known = last_fingerprint(state["records"], target)
            if known and state["migrations"] == known:
                ahead = []
                step.note(f"the same migrations are applied as when {target} was last live")
            else:
                status, output = manage(h, target_dir, "ahead")
                if status != 0:
                    raise StepError("could not read the applied migrations\n" + output[-1500:])
                ahead = [line[6:] for line in output.splitlines() if line.startswith("AHEAD ")]
            if ahead:
                backup = backup_undoing(state["records"], target)
                message = (f"the database has {len(ahead)} migrations {target} does not know: {', '.join(ahead)}"
                           + (f"; the backup taken before them is {backup}" if backup else ""))
                if not force:
                    raise StepError(message, "roll back anyway with --force, or restore that backup with db.restore")
                step.warn(message)
        old, standby = live_colour(state), standby_colour(state)
        colour, started, switched = standby, False, False
        if not ahead:
            entry["migrations"] = state["migrations"]
        try:
            run_hooks(c, site, report, "before_switch", target_dir, entry)
            if warm_standby(state, target):
                with report.step(f"switch to {standby} (warm standby) once /health/ answers 200") as step:
                    switched = switch(h, target_dir, standby, gate=True, migrations=False) is not None
                    if switched:
                        step.changed(switched_text(standby, old, ""))
                    else:
                        step.warn(f"{standby} did not answer /health/ with 200 within {STANDBY_TIMEOUT}s: starting {target} afresh")
            if not switched:
                colour = free_colour(state)
                with report.step(f"start {colour} and wait for /health/"):
                    started = True
                    start_colour(h, colour, target_dir)
                with report.step("switch") as step:
                    switched = True
                    switch(h, target_dir, colour, standby, migrations=False)
                    step.changed(switched_text(colour, old, standby))
        except BaseException:
            if started and not switched:
                stop_colour(h, colour)
            if not switched:
                run_hooks(c, site, report, "after_failure", target_dir, {**entry, "step": report.steps[-1].name})
            raise
        entry.update(result="good", seconds=round(time.monotonic() - began, 2), colour=colour)
        with report.step("record and prune"):
            record_and_prune(h, state, entry)
        run_hooks(c, site, report, "after_switch", target_dir, entry)
    smoke_checks(h, str(entry.get("sha") or ""))
    report.summary(f"{target} live")
    return entry


def local_repo(c: Context) -> str:
    return str(Path(project_dir(c) or ".").resolve())


@task(help={
    "ref": "tag, branch or commit to put live (required)",
    "source": "where the code comes from: server (fetch sum.repo_url), local (send this checkout's commit) or auto",
    "strict": "refuse git requirements that follow a branch instead of a tag or commit",
})
def release(c: Context, ref: str = "", source: str = "auto", strict: bool = False) -> None:
    """Build REF beside the live release and switch to it once it answers /health/; the old one serves until then."""
    validate_ref(ref)
    validate_source(source)
    repo = local_repo(c)

    def one(conn: Connection, site: Site) -> str:
        entry = do_release(conn, site, ref, choose_source(site, source), strict, repo)
        return f"{entry['id']} live ({ref})"

    one_by_one(c, "deploy", one, f"release {ref}")


@task(help={"to": "release id, ref or commit to go back to (default: the previous good release)",
            "force": "roll back even when the database has migrations the target does not know"})
def rollback(c: Context, to: str = "", force: bool = False) -> None:
    """Switch back to an earlier good release, health-gated like a release, without rebuilding anything."""
    if to:
        validate_ref(to)
    one_by_one(c, "deploy", lambda conn, site: f"{do_rollback(conn, site, to, force)['id']} live", "rollback")


@task
def releases(c: Context) -> None:
    """List the release records on each host, newest last, marking the live one."""
    for conn, site in targets(c, role="deploy"):
        state = Host(conn, site, Report("releases", host_label(conn))).state()
        for r in state["records"]:
            mark = "*" if r["id"] == state["current"] else " "
            on_disk = "" if r["id"] in state["dirs"] else " (pruned)"
            print(f" {mark} {r['id']:<28} {r.get('ref', ''):<14} {str(r.get('sha', ''))[:12]:<12} {r.get('result', ''):<24} "
                  f"{r.get('seconds', '')}s {r.get('who', '')} {r.get('backup', '')}{on_disk}")


@task
def unlock(c: Context) -> None:
    """Free a lock left by a task whose SSH session lingers (a killed or interrupted task frees it by itself)."""
    for conn, site in targets(c, role="deploy"):
        held = unlock_site(conn, site)
        print(f"[{host_label(conn)}] " + (f"ended: {held}" if held else "not locked"))
