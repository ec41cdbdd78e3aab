"""fab offsite.copy, offsite.snapshots, offsite.key: encrypted, append-only copies of the backups on a second machine."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from invoke import Collection, Context, task

from ..commands import offsite
from ..commands.credentials import add_secret
from ..configuration import Site
from ..host.output import Report, StepError
from ..host.runner import host_label, run
from ..host.targets import targets


def password_path(site: Site) -> Path:
    """Where the operator keeps the repository password: `sum.offsite.password_file`, or one file per site under ~/.config."""
    given = site.offsite.password_file or f"~/.config/sum_tasks/{site.site_slug}.restic-password"
    return Path(given).expanduser()


def operator_password(site: Site, create: bool = True) -> str:
    """The repository password from the operator's machine, made (0600, in a 0700 directory) when there is none yet."""
    if not site.offsite.target:
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


def _require(site: Site) -> None:
    if not site.offsite.target:
        raise StepError("sum.offsite.target is not set: there is no off-site copy for this site", "see the runbook's Off-site copies")


@task
def copy(c: Context) -> None:
    """Copy the newest verified backup and media/ off the host now (what runs after each good nightly backup)."""
    for conn, site in targets(c):
        report = Report("offsite.copy", host_label(conn))
        with report.step("off-site copy of the newest verified backup and media") as step:
            _require(site)
            result = run(conn, offsite.copy_script(site), check=False)
            status = offsite.parse_status(result.stdout)
            if not result.ok or status is None:
                raise StepError(f"the off-site copy failed (exit {result.exited})", "see `fab logs --service offsite`")
            step.changed(status.describe(int(time.time())))
        report.summary()


@task
def snapshots(c: Context) -> None:
    """List this site's snapshots in the off-site repository, newest first."""
    for conn, site in targets(c):
        report = Report("offsite.snapshots", host_label(conn))
        with report.step("read the off-site repository") as step:
            _require(site)
            found = offsite.parse_snapshots(run(conn, offsite.snapshots_script(site), hint="see `fab logs --service offsite`").stdout)
            step.note(f"{len(found)} snapshots")
        for snap in found:
            print(f"  {snap.id[:8]}  {snap.time}  {snap.dump}")
        report.summary()


@task
def key(c: Context) -> None:
    """Print the backup machine's `authorized_keys` line for this site (its key, forced into an append-only repository)."""
    for conn, site in targets(c):
        _require(site)
        public = run(conn, offsite.public_key_script(site), hint="run provision first: it makes the key").stdout
        print(offsite.authorized_keys_line(site, public), end="")


offsite_collection = Collection("offsite", copy, snapshots, key)
