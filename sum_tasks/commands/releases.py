"""Releases as data: refs and sources, the release ledger (records, pruning, rollback targets), requirements and
venvs, migrations; and the scripts that fetch a commit, build a venv, run Django's steps and write a record."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Container, Iterable
from datetime import UTC, datetime

from invoke.exceptions import Exit

from ..configuration import Site
from .envfile import in_site_env, site_psql
from .script import Script, q

LOCK_TIMEOUT = "2s"

REF_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*@\{)(?!.*//)[A-Za-z0-9._/@+-]{1,200}(?<![./])(?<!\.lock)$")


GIT_REQ_RE = re.compile(r"git\+\S+?(?:@(?P<ref>[^#\s@/]+))?(?:#\S*)?$")


PINNED_REF_RE = re.compile(r"^(?:v?\d+(?:\.\d+)*(?:[-.+][A-Za-z0-9.]+)?|[0-9a-f]{7,40})$")


SOURCES = ("auto", "server", "local")


PENDING = 10


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


# Options whose value is a path in the repository when it is not a URL.
PATH_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-f", "--find-links", "-e", "--editable")


def local_references(requirements: str) -> list[str]:
    """The repository paths requirements.txt refers to: wheels and archives (``./wheels/x.whl``), ``--find-links``
    directories, ``-r``/``-c`` files and local projects (``-e ./src/pkg``), relative to the repository's top."""
    found = set()
    for raw in requirements.splitlines():
        words = raw.split(" #", 1)[0].split()
        if not words or words[0].startswith("#"):
            continue
        option, _, value = words[0].partition("=")
        if option in PATH_OPTIONS:
            target, named = value or (words[1] if len(words) > 1 else ""), True
        elif option[:2] in PATH_OPTIONS and not option.startswith("--"):
            target, named = option[2:], True
        else:
            target, named = words[0], False
        target = target.removeprefix("file:")
        if "://" in target or target.startswith("/") or not target:
            continue
        if named or target.startswith(".") or target.endswith((".whl", ".tar.gz", ".zip")):
            path = posixpath.normpath(target)
            if path != "." and not path.startswith(".."):
                found.add(path)
    return sorted(found)


def requirements_digest(requirements: bytes, python: str, tree: str = "") -> str:
    """Which venv a release uses: one per interpreter, exact requirements.txt, and the content of every repository
    file it refers to (`local_references`; `tree` is ``git ls-tree -r`` of the commit, whose blob ids are content hashes)."""
    digest = hashlib.sha256(python.encode() + b"\0" + requirements)
    blobs = dict(reversed(line.split("\t", 1)) for line in tree.splitlines() if "\t" in line)
    for ref in local_references(requirements.decode(errors="replace")):
        for path in sorted(p for p in blobs if p == ref or p.startswith(ref + "/")):
            digest.update(f"\0{path}\0{blobs[path].split()[-1]}".encode())
    return digest.hexdigest()[:16]


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


def good_releases(records: Iterable[dict], present: Container[str]) -> list[str]:
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


MIGRATIONS_SQL = "SELECT md5(coalesce(string_agg(app || '.' || name, ',' ORDER BY app, name), '')) FROM django_migrations"


def migrations_script(site: Site) -> str:
    """Shell printing a fingerprint of the migrations applied to the site's database (psql, no Django)."""
    return f"{site_psql(site, MIGRATIONS_SQL)} 2>/dev/null"


def last_fingerprint(records: list[dict], release_id: str) -> str:
    """The migrations fingerprint recorded the last time `release_id` went live knowing every applied migration."""
    return next((r.get("migrations", "") for r in reversed(records) if r["id"] == release_id and r.get("migrations")), "")


def release_entry(site: Site, sha: str, requirements: str, tree: str = "") -> dict:
    """The record a new release starts with: its commit, id and venv."""
    release_id = new_release_id(sha)
    return {"sha": sha, "id": release_id, "venv": requirements_digest(requirements.encode(), site.python, tree)}


def fetch_server_script(site: Site, ref: str, staging: str) -> Script:
    """Fetch `sum.repo_url` into the site's mirror and unpack the commit `ref` names into `staging`.

    Prints ``@@sha``, ``@@tree`` (``git ls-tree -r``) and ``@@requirements``, or ``@@nosuchref`` when the ref names no commit.
    """
    repo, url = q(site.paths.repo), q(site.repo_url)
    return Script(f"fetch {site.repo_url} and unpack {ref}", (
        f"if [ -d {repo} ]; then git -C {repo} remote set-url origin {url} && "
        f"git -C {repo} fetch --quiet --prune --tags origin '+refs/*:refs/*'; "
        f"else git clone --quiet --mirror {url} {repo}; fi || exit 1\n"
        f"sha=$(git -C {repo} rev-parse --verify --quiet {q(ref + '^{commit}')}) || {{ echo @@nosuchref; exit 0; }}\n"
        f"echo @@sha; echo \"$sha\"; echo @@tree; git -C {repo} ls-tree -r \"$sha\" || exit 1\n"
        f"mkdir {q(staging)} && touch {q(staging)}/.building && "
        f"git -C {repo} archive --format=tar \"$sha\" | tar -x -C {q(staging)} && "
        f"echo @@requirements && cat {q(staging)}/requirements.txt"
    ))


def place_script(site: Site, staging: str, entry: dict, from_stdin: bool) -> Script:
    """Move `staging` into place as the release (unpacking the tar.gz on stdin into it first, `from_stdin`).

    Writes its ``.release.env``, links its venv, and prints ``reused`` when that venv is complete already.
    """
    paths = site.paths
    release_dir, venv = paths.release(entry["id"]), paths.venv(entry["venv"])
    unpack = f"mkdir {q(staging)} && touch {q(staging)}/.building && tar -xzf - -C {q(staging)} && " if from_stdin else ""
    return Script("unpack and place the release", (
        f"{unpack}mv -T {q(staging)} {q(release_dir)} && "
        f"printf 'GIT_SHA=%s\\nSUM_RELEASE_ID=%s\\n' {q(entry['sha'])} {q(entry['id'])} > {q(release_dir)}/.release.env && "
        f"ln -sfn {q(venv)} {q(release_dir)}/.venv && if [ -e {q(venv)}/.complete ]; then echo reused; fi"
    ))


def venv_script(site: Site, venv: str, release_dir: str) -> Script:
    """A new venv from the release's requirements.txt, never touching the live one. pip runs in the release, where
    relative paths in requirements.txt (``./wheels/x.whl``) resolve."""
    return Script("pip install -r requirements.txt", (
        f"rm -rf {q(venv)} && {q(site.python)} -m venv {q(venv)} && cd {q(release_dir)} && "
        f"{q(venv)}/bin/pip install --disable-pip-version-check --no-input --progress-bar off -r requirements.txt && "
        f"touch {q(venv)}/.complete"
    ))


def freeze_script(venv: str) -> Script:
    return Script("pip freeze", f"{q(venv)}/bin/pip freeze --all")


def manage_script(site: Site, release_dir: str, mode: str) -> Script:
    """`MANAGE_SCRIPT` in the release with the site's environment: ``check``, ``apply`` (migrate, collectstatic) or ``ahead``.

    Every statement waits at most `LOCK_TIMEOUT` for a lock: a migration stuck behind a running pg_dump
    would otherwise hold every query of the live site behind it; it fails instead, and the release with it.
    """
    return Script(f"manage.py ({mode})", f"{in_site_env(site, release_dir)} && export PGOPTIONS={q(f'-c lock_timeout={LOCK_TIMEOUT}')} && "
                                         f"exec .venv/bin/python -c {q(MANAGE_SCRIPT)} {q(mode)}")


def changed_files_script(site: Site, old: str, new: str) -> Script:
    return Script("changed files", f"git -C {q(site.paths.repo)} diff --name-only {q(old)} {q(new)}")


def failed_script(release_dir: str, staging: str) -> Script:
    """After a failed release: mark its directory failed (kept for a look), or remove what was half unpacked."""
    if release_dir:
        return Script("mark the release failed", f"rm -f {q(release_dir)}/.building && touch {q(release_dir)}/.failed")
    return Script("remove the half-unpacked release", f"rm -rf {q(staging)}")


def prune_paths(site: Site, state_records: Iterable[dict], dirs: Iterable[str], venvs: Iterable[str], running: Iterable[str],
                entry: dict) -> tuple[list[str], list[str]]:
    """After a good release: (release ids to delete, paths to delete: those releases and the venvs no kept release uses)."""
    records = [*state_records, entry]
    present = set(dirs) | {entry["id"]}
    doomed = prune_list(records, present, entry["id"], site.keep_releases, running)
    kept = present - set(doomed)
    used = {r.get("venv") for r in records if r["id"] in kept}
    unused = [v for v in venvs if v not in used]
    return doomed, [site.paths.release(r) for r in doomed] + [site.paths.venv(v) for v in unused]


def record_script(site: Site, entry: dict, remove: Iterable[str] = ()) -> Script:
    """Append `entry` to the release records, then delete `remove`."""
    text = f"printf '%s\\n' {q(json.dumps(entry, sort_keys=True))} >> {q(site.paths.records)}"
    remove = list(remove)
    if remove:
        text += " && rm -rf " + " ".join(q(p) for p in remove)
    return Script("write the release record", text)
