"""fab release, fab releases: build beside the live release, start it on a free colour, switch once healthy.

Each step is one ``report.step`` below; the scripts it sends are built in ``commands/releases.py`` and
``commands/colours.py``, and the paths they touch are in ``configuration/hostmap.py``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from fabric import Connection
from invoke import Context, task

from ..commands import colours as plan
from ..commands import health, releases
from ..commands.script import sections
from ..commands.state import ReleaseState, parse_state, state_script
from ..configuration import Site
from ..host.output import Report, StepError
from ..host.runner import host_label, run, tail
from ..host.targets import one_by_one, project_dir, targets, who
from . import colours
from .db import backup as db_backup
from .hooks import run_hooks
from .lock import site_lock


def resolve_local(repo: str, ref: str) -> str:
    result = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StepError(f"ref {ref!r} does not resolve to a commit in the local checkout {repo}", "fetch it, or check the spelling")
    return result.stdout.strip()


def fetch_code(c: Connection, site: Site, ref: str, source: str, repo: str, staging: str) -> tuple[dict, str]:
    """Put the commit `ref` names on the host as a new release dir: its record (sha, id, venv, reused) and requirements.txt.

    `reused` is True when the venv for its requirements already exists. From the local checkout
    this is one command with `git archive` on its stdin; from the server's mirror, two commands.
    """
    archive = None
    if source == "local":
        sha = resolve_local(repo, ref)
        git = ["git", "-C", repo]
        archive = subprocess.run([*git, "archive", "--format=tar.gz", sha], capture_output=True, check=True).stdout
        shown = subprocess.run([*git, "show", f"{sha}:requirements.txt"], capture_output=True, text=True, check=False)
        if shown.returncode != 0:
            raise StepError(f"{ref} has no requirements.txt", "the client repo needs a requirements.txt at its top level")
        requirements = shown.stdout
        tree = subprocess.run([*git, "ls-tree", "-r", sha], capture_output=True, text=True, check=True).stdout
    else:
        out = run(c, releases.fetch_server_script(site, ref, staging),
                  hint="check the server's deploy key can read sum.repo_url, and that the commit has a requirements.txt").stdout
        if "@@nosuchref" in out:
            raise StepError(f"ref {ref!r} does not resolve to a commit in {site.repo_url}", "push the tag or branch, or check the spelling")
        parts = sections(out)
        sha, requirements, tree = parts["sha"].strip(), parts["requirements"], parts.get("tree", "")
    entry = releases.release_entry(site, sha, requirements, tree)
    out = run(c, releases.place_script(site, staging, entry, from_stdin=archive is not None), stdin=archive).stdout
    entry["reused"] = out.strip() == "reused"
    return entry, requirements


def changed_files(c: Connection, site: Site, source: str, repo: str, old: str, new: str) -> list[str] | None:
    """Paths that differ between two commits, or None when that cannot be told."""
    if source == "local":
        result = subprocess.run(["git", "-C", repo, "diff", "--name-only", old, new], capture_output=True, text=True, check=False)
        return result.stdout.splitlines() if result.returncode == 0 else None
    found = run(c, releases.changed_files_script(site, old, new), check=False)
    return found.stdout.splitlines() if found.ok else None


def manage(c: Connection, site: Site, release_dir: str, mode: str) -> tuple[int, str]:
    """Run the migration/collectstatic script in the release with the site's environment: (exit status, output)."""
    result = run(c, releases.manage_script(site, release_dir, mode), check=False)
    return result.exited, result.stdout + result.stderr


def serving_text(state: ReleaseState) -> str:
    """What still serves the site if this release fails before its switch."""
    return colours.SERVING if state.current else "no release was live before this one, so nothing serves the site yet"


def prepare(c: Connection, site: Site, report: Report, state: ReleaseState, entry: dict, release_dir: str,
            source: str, repo: str, strict: bool, requirements: str) -> None:
    """Everything before the switch that needs the release's own code: pins, venv, migrations, static files."""
    with report.step("python environment") as step:
        loose = releases.unpinned(requirements)
        if loose and (strict or site.strict_pins):
            raise StepError("git requirements follow a branch, not a tag or commit:\n" + "\n".join(loose),
                            "pin them to a tag or commit (runbook section 10), or drop --strict")
        for line in loose:
            step.warn(f"git requirement not pinned to a tag or commit: {line}")
        venv = site.paths.venv(entry["venv"])
        if entry.pop("reused"):
            step.note("requirements unchanged: venv reused, nothing downloaded")
        else:
            run(c, releases.venv_script(site, venv, release_dir), timeout=1800,
                hint="read the pip output above; fix requirements.txt and release again")
            step.changed("built a new venv")
            for line in run(c, releases.freeze_script(venv)).stdout.splitlines():
                if "git+" in line:
                    step.note(f"from git: {line}")
    run_hooks(c, site, report, "before_migrate", release_dir, entry)
    live = state.record(state.current)
    with report.step("migrate and collectstatic") as step:
        if live.get("venv") == entry["venv"] and live.get("sha"):
            changed = changed_files(c, site, source, repo, live["sha"], entry["sha"])
            if changed is not None and not releases.needs_django(changed):
                step.note("no migration, static file or settings changed since the live release: skipped")
                # Same migration files and venv as the live release: what it knew applied, this one knows too.
                entry["migrations"] = live.get("migrations", "")
                return
        status, output = manage(c, site, release_dir, "check")
        if status == releases.PENDING:
            entry["pending"] = len(releases.pending_migrations(output))
            step.note(f"{entry['pending']} pending migrations")
            entry["backup"] = db_backup(c, site, report, label="pre-" + entry["id"].lower())
            step.note(f"backup {entry['backup']}")
            status, output = manage(c, site, release_dir, "apply")
        if status != 0:
            raise StepError(f"migrate/collectstatic failed (exit status {status})\n{tail(output)}",
                            f"{serving_text(state)}; fix the migration and release again")


def record_and_prune(c: Connection, site: Site, state: ReleaseState, entry: dict) -> list[str]:
    """Append the release record; after a good release, delete old releases and the venvs nothing uses any more."""
    doomed, paths = [], []
    if entry.get("result") == "good":
        running = [state.current, *state.colours.values()]
        doomed, paths = releases.prune_paths(site, state.records, state.dirs, state.venvs, running, entry)
    run(c, releases.record_script(site, entry, paths))
    return doomed


def smoke_checks(c: Connection, site: Site, report: Report, sha: str) -> None:
    """/health/ (reporting `sha`) and /sitemap.xml through Caddy on the host itself (no DNS needed), and from here when the domain resolves."""
    with report.step("smoke check through caddy") as step:
        out = run(c, health.smoke(site), check=False).stdout
        sitemap, _, answer = out.partition("\n")
        found = health.parse_answer(answer)
        if not found.ok:
            step.warn(f"/health/ through Caddy: {found.describe()}; the release is live, check Caddy (`fab logs --service caddy`)")
        elif sha and found.sha and found.sha != sha:
            step.warn(f"/health/ through Caddy reports {found.sha[:12]}, not {sha[:12]}: Caddy is not proxying to live.sock "
                      "(run `fab provision`), or another server answers for this domain")
        else:
            step.note(found.describe())
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


def do_release(c: Connection, site: Site, ref: str, source: str, strict: bool, repo: str) -> dict:
    report = Report(f"release {ref}", host_label(c))
    began = time.monotonic()
    entry: dict = {"ref": ref, "who": who(), "at": datetime.now(UTC).isoformat(timespec="seconds"), "backup": ""}
    with site_lock(c, site, f"release {ref}", then=state_script(site).text) as out:
        with report.step("state") as step:
            done, state = colours.clean_up(c, site, parse_state(out))
            for note in done:
                step.changed(note)
        old, colour, retire = plan.live_colour(state), plan.free_colour(state), plan.standby_colour(state)
        staging = f"{site.paths.releases}/.incoming-{int(time.time() * 1000)}"
        release_dir, started, switched = "", False, False
        try:
            with report.step(f"fetch {ref} ({source})") as step:
                fetched, requirements = fetch_code(c, site, ref, source, repo, staging)
                entry.update(fetched)
                release_dir = site.paths.release(entry["id"])
                step.note(f"{entry['sha'][:12]} as {entry['id']}")
            prepare(c, site, report, state, entry, release_dir, source, repo, strict, requirements)
            run_hooks(c, site, report, "before_switch", release_dir, entry)
            with report.step(f"start {colour} and wait for /health/"):
                started = True
                applied = (f"; its {entry.pop('pending')} migrations stay applied (the backup taken before them: {entry['backup']})"
                           if entry.get("pending") else "")
                colours.start(c, site, colour, release_dir, serving_text(state) + applied)
            with report.step("switch") as step:
                switched = True
                known = entry.get("migrations", "")
                fingerprint = colours.switch(c, site, report, plan.switch_script(site, release_dir, colour, retire, migrations=not known))
                entry["migrations"] = known or fingerprint
                step.changed(plan.switched_text(colour, old, retire))
        except BaseException:
            if switched:
                raise
            failed = report.steps[-1].name if report.steps else "release"
            if started:
                colours.stop(c, site, colour)
            run(c, releases.failed_script(release_dir, staging), check=False)
            if "id" in entry:
                entry.pop("reused", None)
                entry.pop("pending", None)
                entry.update(result=f"failed: {failed}", seconds=round(time.monotonic() - began, 2), colour=colour)
                record_and_prune(c, site, state, entry)
            run_hooks(c, site, report, "after_failure", release_dir or site.paths.root, {**entry, "step": failed})
            raise
        entry.update(result="good", seconds=round(time.monotonic() - began, 2), colour=colour)
        with report.step("record and prune") as step:
            removed = record_and_prune(c, site, state, entry)
            if removed:
                step.changed(f"removed {len(removed)} old releases")
        run_hooks(c, site, report, "after_switch", release_dir, entry)
    smoke_checks(c, site, report, str(entry.get("sha") or ""))
    report.summary(f"{entry['id']} live ({entry['sha'][:12]})")
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
    releases.validate_ref(ref)
    releases.validate_source(source)
    repo = local_repo(c)

    def one(conn: Connection, site: Site) -> str:
        entry = do_release(conn, site, ref, releases.choose_source(site, source), strict, repo)
        return f"{entry['id']} live ({ref})"

    one_by_one(c, "deploy", one, f"release {ref}")


@task(name="releases")
def releases_task(c: Context) -> None:
    """List the release records on each host, newest last, marking the live one."""
    for conn, site in targets(c, role="deploy"):
        state = colours.read_state(conn, site)
        for r in state.records:
            mark = "*" if r["id"] == state.current else " "
            on_disk = "" if r["id"] in state.dirs else " (pruned)"
            print(f" {mark} {r['id']:<28} {r.get('ref', ''):<14} {str(r.get('sha', ''))[:12]:<12} {r.get('result', ''):<24} "
                  f"{r.get('seconds', '')}s {r.get('who', '')} {r.get('backup', '')}{on_disk}")
