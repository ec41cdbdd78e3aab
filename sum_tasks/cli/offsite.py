"""fab offsite.*: encrypted, append-only copies of the backups on a second machine (copy, snapshots, key), and what
they are for: a rehearsal from them (rehearse) and bringing a site back onto a new host (recover)."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from fabric import Connection
from invoke import Collection, Context, task
from invoke.exceptions import Exit

from ..commands import offsite, releases
from ..commands.backup import first, records, script_error
from ..commands.credentials import add_secret
from ..commands.lock import BUSY
from ..configuration import ConfigError, Site
from ..host.output import Report, StepError
from ..host.runner import host_label, run
from ..host.targets import targets, who
from .db import backup, rehearsal_steps, restore_site
from .lock import locked, site_lock
from .release import do_release, local_repo

SNAPSHOT_RE = re.compile(r"latest|[0-9a-f]{8,64}")
# A fetch and a restore of a large database; the host's own run stops at 4 hours too (its unit's TimeoutStartSec=).
REHEARSE_TIMEOUT = 4 * 3600


def password_path(site: Site) -> Path:
    """Where the operator keeps the repository password: `sum.offsite.password_file`, or one file per site under ~/.config."""
    given = site.offsite.password_file or f"~/.config/sum_tasks/{site.site_slug}.restic-password"
    return Path(given).expanduser()


def operator_password(site: Site, create: bool = True) -> str:
    """The repository password from the operator's machine, made (0600, in a 0700 directory) when there is none yet."""
    if not site.offsite.enabled:
        return ""
    path = password_path(site)
    if not path.exists():
        if not create:
            return secrets.token_urlsafe(32)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    password = path.read_text().strip()
    if len(password) < 16:
        raise StepError(f"{path} holds no usable password (16 characters at least)", "restore it from the agency's password manager")
    add_secret(password)
    return password


def operator_credentials(site: Site) -> str:
    """The host's copy of `sum.offsite.env_file` (read on the operator's machine, its names checked), its secrets registered so
    no output shows them; empty without one."""
    if not site.offsite.repository or not site.offsite.env_file:
        return ""
    path = Path(site.offsite.env_file).expanduser()
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError("offsite.env_file", f"cannot read {path}: {err.strerror}") from None
    content, secrets_in_it = offsite.host_env(site, offsite.parse_env_file(site, text))
    for secret in secrets_in_it:
        add_secret(secret)
    return content


def validate_snapshot(snapshot: str) -> None:
    if not SNAPSHOT_RE.fullmatch(snapshot):
        raise Exit(f"--snapshot must be `latest` or a snapshot id (hex), got {snapshot!r}", code=2)


def offsite_targets(c: Context, task_name: str, destructive: bool = False) -> Iterator[tuple[Connection, Site, Report]]:
    """The hosts and sites `targets` gives, each with its report; refused before connecting when the site has no off-site copy."""
    for conn, site in targets(c, destructive=destructive):
        if not site.offsite.enabled:
            raise Exit(f"{task_name}: neither sum.offsite.target nor sum.offsite.repository is set, so this site has no off-site copy "
                       "(see the runbook's Off-site copies)", code=2)
        yield conn, site, Report(task_name, host_label(conn))


@task
def copy(c: Context) -> None:
    """Copy the site backups (dump, media/ and release ledger, each as taken together) not yet off the host, now (what runs
    after each good nightly backup)."""
    for conn, site, report in offsite_targets(c, "offsite.copy"):
        with report.step("off-site copy of the site backups not yet there") as step:
            step.changed(copy_now(conn, site))
        report.summary()


def copy_now(conn: Connection, site: Site) -> str:
    """Run the off-site copy on the host now; what it sent."""
    result = run(conn, offsite.copy_script(site), check=False)
    status = offsite.parse_status(result.stdout)
    if not result.ok or status is None:
        raise StepError(f"the off-site copy failed (exit {result.exited})", "see `fab logs --service offsite`")
    return status.describe(int(time.time()))


@task
def snapshots(c: Context) -> None:
    """List this site's snapshots in the off-site repository, newest first."""
    for conn, site, report in offsite_targets(c, "offsite.snapshots"):
        with report.step("read the off-site repository") as step:
            found = offsite.parse_snapshots(run(conn, offsite.snapshots_script(site), hint="see `fab logs --service offsite`").stdout)
            step.note(f"{len(found)} snapshot{'' if len(found) == 1 else 's'}")
        for snap in found:
            print(f"  {snap.id[:8]}  {snap.time}  {snap.dump}")
        report.summary()


@task(auto_shortflags=False, help={
    "snapshot": "the snapshot to bring back (an id from `fab offsite.snapshots`); default: the latest",
    "source": "where the release's code comes from: auto, local or server (as for `release`)",
    "i_know_this_will_overwrite": "required: the site's database, media and live release are replaced by the snapshot's",
})
def recover(c: Context, snapshot: str = "latest", source: str = "auto", i_know_this_will_overwrite: bool = False) -> None:
    """Bring the site back from the off-site repository onto this (freshly provisioned) host: the release that was live when
    the snapshot was taken, then its database and media together, health-gated like a release."""
    if not i_know_this_will_overwrite:
        raise Exit("offsite.recover replaces the site's database, media and release: add --i-know-this-will-overwrite", code=2)
    validate_snapshot(snapshot)
    releases.validate_source(source)
    for conn, site, report in offsite_targets(c, f"offsite.recover {snapshot}", destructive=True):
        began = time.monotonic()
        with site_lock(conn, site, "offsite.recover"), \
                report.step(f"restore snapshot {snapshot}: the dump into backups/, media into recovery/") as step:
            result = run(conn, offsite.restore_script(site, snapshot), check=False, timeout=3600)
            dump, live = offsite.parse_restored(result.stdout)
            if not result.ok or not dump:
                raise StepError(f"the restore failed (exit {result.exited}): {result.stderr.strip()[-300:]}",
                                "see `fab offsite.snapshots`; the database and the live release are untouched")
            if live is None:
                raise StepError("the snapshot's release ledger names no good release", "release by hand, then `fab db.restore --file "
                                f"{dump} --i-know-this-will-overwrite`")
            step.changed(f"{dump}; live then: {live.get('ref', '?')} at {live['sha'][:12]}")
        do_release(conn, site, live["sha"], releases.choose_source(site, source), False, local_repo(c))
        restore_site(conn, site, report, dump, "staged")
        # This host's first copy off it: a backup of the recovered database, then the copy, as a night would.
        backup(conn, site, report)
        with report.step("off-site copy from this host") as step:
            step.changed(copy_now(conn, site))
        report.summary(f"recovered {dump} and {live['sha'][:12]} in {time.monotonic() - began:.1f}s")


@task(help={"snapshot": "the snapshot whose dump to rehearse (an id from `fab offsite.snapshots`); default: the latest"})
def rehearse(c: Context, snapshot: str = "latest") -> None:
    """`db.rehearse` on a dump fetched from the off-site repository, now: what the host's monthly timer runs; proves the
    copies off the host restore. `check` shows the result."""
    validate_snapshot(snapshot)
    for conn, site, report in offsite_targets(c, f"offsite.rehearse {snapshot}"):
        with report.step(f"rehearse snapshot {snapshot} on the host: fetch its dump, restore it into the scratch database"):
            result = run(conn, offsite.rehearse_script(site, snapshot, who()), as_=site.deploy_user, check=False, timeout=REHEARSE_TIMEOUT)
        if result.exited == BUSY:
            raise locked(conn, site, next((rest for tag, rest in records(result.stdout) if tag == "LOCKED"), ""))
        with report.step(f"fetch the dump of snapshot {snapshot} from the off-site repository") as step:
            fetched = first(result.stdout, "FETCHED")
            if fetched is None:
                raise StepError(f"the fetch failed (exit {result.exited}): {result.stderr.strip()[-300:]}", "see `fab offsite.snapshots`")
            name = fetched.get("file", "").rsplit("/", 1)[-1]
            step.note(f"{name} of snapshot {fetched.get('snapshot', '?')[:8]}")
        rehearsal_steps(report, site, result)
        with report.step("remove the fetched dump; the result for `check`") as step:
            done = offsite.parse_rehearsal(result.stdout)
            if done is None or not done.passed or not result.ok:
                raise StepError(done.reason if done and done.reason else script_error(result), "see `fab logs --service offsite`")
            step.note(done.detail())
        report.summary(f"rehearsed {name} from the off-site repository")


@task
def key(c: Context) -> None:
    """Print the backup machine's `authorized_keys` line for this site (its key, forced into an append-only repository)."""
    for conn, site, _ in offsite_targets(c, "offsite.key"):
        if not site.offsite.ssh_login:
            raise Exit("offsite.key: sum.offsite.repository is not reached over SSH: restic uses the credentials of "
                       "sum.offsite.env_file, and the site has no SSH key for it", code=2)
        public = run(conn, offsite.public_key_script(site), hint="run provision first: it makes the key").stdout
        print(offsite.authorized_keys_line(site, public), end="")


offsite_collection = Collection("offsite", copy, snapshots, rehearse, recover, key)
