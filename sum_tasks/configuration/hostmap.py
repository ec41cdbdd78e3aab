"""The host map: every path, unit, socket, lock and root command a site has on a host, declared once.

`HostMap(site)` names them; `directories` and `files` give each one's owner and mode, and
`sudo_commands` is the exact list the sudoers file allows, built by the same `systemctl` that
the tasks use to send those commands. ``docs/architecture.md`` shows the generated table.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .settings import Site

# gunicorn instances per site: the live one, the warm standby (the release before), and one a release starts.
COLOURS = ("blue", "green", "amber")
SRV = "/srv/sum"
RUN = "/run/sum"
LOGS = "/var/log/sum"
SYSTEMD = "/etc/systemd/system"
SYSTEMCTL = "/usr/bin/systemctl"
# sudoers matches the path as typed; merged-/usr hosts also resolve /bin/systemctl.
SYSTEMCTL_PATHS = (SYSTEMCTL, "/bin/systemctl")
CADDY_SITES = "/etc/caddy/sites-enabled"
WEB_GROUP = "www-data"
# Verbs the deploy user may run on each gunicorn colour: starting one, stopping one now or in the background.
COLOUR_VERBS = ("start", "stop", "--no-block stop", "restart", "reset-failed")
CELERY_VERBS = ("start", "stop", "restart")


class Entry(NamedTuple):
    """One path with its owner, group and mode, and what it is for."""

    path: str
    mode: int
    owner: str
    group: str
    what: str


def systemctl(verb: str, unit: str) -> str:
    """``systemctl VERB UNIT`` as root through sudo: the one spelling of every root command a task sends.

    The sudoers file allows exactly ``SYSTEMCTL VERB UNIT`` for the pairs `HostMap.sudo_rules` lists.
    """
    return f"sudo -n {SYSTEMCTL} {verb} {shlex.quote(unit)}"


@dataclass(frozen=True)
class HostMap:
    """Where one site lives on a host."""

    site: Site
    # Only tests move the site root (to run the backup script in a temporary directory).
    root_override: str = ""

    # ------------------------------------------------------------ the site root and what is in it

    @property
    def slug(self) -> str:
        return self.site.site_slug

    @property
    def root(self) -> str:
        return self.root_override or f"{SRV}/{self.slug}"

    @property
    def env(self) -> str:
        return f"{self.root}/.env"

    @property
    def backups(self) -> str:
        return f"{self.root}/backups"

    @property
    def static(self) -> str:
        return f"{self.root}/static"

    @property
    def media(self) -> str:
        return f"{self.root}/media"

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    @property
    def venvs(self) -> str:
        return f"{self.root}/venvs"

    def venv(self, digest: str) -> str:
        return f"{self.venvs}/{digest}"

    @property
    def colours(self) -> str:
        return f"{self.root}/colours"

    def colour(self, colour: str) -> str:
        """The link naming the release `colour` runs."""
        return f"{self.colours}/{colour}"

    def env_stamp(self, colour: str) -> str:
        """sha256 of the .env `colour` started with."""
        return f"{self.colours}/{colour}.env"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def live_socket(self) -> str:
        """Caddy proxies here: a link to the live colour's socket."""
        return f"{self.root}/live.sock"

    @property
    def records(self) -> str:
        return f"{self.root}/releases.jsonl"

    @property
    def repo(self) -> str:
        return f"{self.root}/repo.git"

    @property
    def lock(self) -> str:
        return f"{self.root}/.lock"

    @property
    def lock_info(self) -> str:
        return f"{self.root}/.lock.info"

    @property
    def backup_lock(self) -> str:
        return f"{self.backups}/.backup.lock"

    # ------------------------------------------------------------ outside the site root

    @property
    def run_dir(self) -> str:
        return f"{RUN}/{self.slug}"

    def socket(self, colour: str) -> str:
        return f"{self.run_dir}/{colour}.sock"

    @property
    def log_dir(self) -> str:
        return f"{LOGS}/{self.slug}"

    @property
    def backup_script(self) -> str:
        """provision installs the backup script here; the nightly service runs it."""
        return f"/usr/local/bin/{self.unit_prefix}-db"

    @property
    def sudoers(self) -> str:
        return f"/etc/sudoers.d/{self.unit_prefix}"

    @property
    def tmpfiles(self) -> str:
        return f"/etc/tmpfiles.d/{self.unit_prefix}.conf"

    @property
    def caddy_site(self) -> str:
        return f"{CADDY_SITES}/{self.unit_prefix}.caddy"

    def unit_file(self, unit: str) -> str:
        return f"{SYSTEMD}/{unit}"

    # ------------------------------------------------------------ units

    @property
    def unit_prefix(self) -> str:
        return f"sum-{self.slug}"

    def gunicorn(self, colour: str) -> str:
        return f"{self.unit_prefix}-gunicorn@{colour}.service"

    @property
    def gunicorn_template(self) -> str:
        return f"{self.unit_prefix}-gunicorn@.service"

    @property
    def celery(self) -> str:
        return f"{self.unit_prefix}-celery.service"

    @property
    def backup_service(self) -> str:
        return f"{self.unit_prefix}-backup.service"

    @property
    def backup_timer(self) -> str:
        return f"{self.unit_prefix}-backup.timer"

    @property
    def scratch_create(self) -> str:
        return f"{self.unit_prefix}-scratchdb-create.service"

    @property
    def scratch_drop(self) -> str:
        return f"{self.unit_prefix}-scratchdb-drop.service"

    def app_units(self) -> list[str]:
        """The units serving the site: the gunicorn colours, and celery when enabled."""
        return [self.gunicorn(c) for c in COLOURS] + ([self.celery] if self.site.celery else [])

    @staticmethod
    def unit_colour(unit: str) -> str:
        """``blue`` for ``sum-x-gunicorn@blue.service``; empty for a unit that is not a gunicorn colour."""
        _, at, rest = unit.partition("-gunicorn@")
        colour = rest.removesuffix(".service")
        return colour if at and colour in COLOURS else ""

    # ------------------------------------------------------------ owners and modes

    def directories(self) -> list[Entry]:
        """The directories provision makes, in order, with exact owner and mode."""
        user = self.site.deploy_user
        return [
            Entry(SRV, 0o755, "root", "root", "all sites"),
            Entry(self.root, 0o755, user, user, "the site root"),
            Entry(self.backups, 0o700, user, user, "database backups, `<slug>_db_<UTC>.sql.gz|zst` and `.sha256` beside each"),
            Entry(self.static, 0o755, user, user, "collectstatic's output, served by Caddy at /static/"),
            Entry(self.media, 0o750, user, WEB_GROUP, "uploads, served by Caddy at /media/"),
            Entry(self.releases, 0o755, user, user, "`<UTC>Z-<sha8>/`: one commit's files, `.venv` link, `.release.env`"),
            Entry(self.venvs, 0o755, user, user, "`<hash>/`: one venv per interpreter and requirements.txt"),
            Entry(self.colours, 0o755, user, user, "`<colour>` links to the release each colour runs, `<colour>.env` the .env hash it started with"),
            Entry(LOGS, 0o755, "root", "root", "all sites' log directories"),
            Entry(self.log_dir, 0o755, user, user, "the site's own log files"),
        ]

    def files(self) -> list[Entry]:
        """The other paths a site has, with owner and mode ('-' where a link or socket has none of its own)."""
        user = self.site.deploy_user
        units = [self.gunicorn_template, self.celery, self.backup_service, self.backup_timer, self.scratch_create, self.scratch_drop]
        return [
            Entry(self.env, 0o600, user, user, "the site's secrets and settings"),
            Entry(self.current, 0o777, user, user, "link to the live release"),
            Entry(self.live_socket, 0o777, user, user, "link to the live colour's socket, which Caddy proxies to"),
            Entry(self.records, 0o644, user, user, "one JSON record per release attempt"),
            Entry(self.repo, 0o755, user, user, "mirror of sum.repo_url (source `server`)"),
            Entry(self.lock, 0o644, user, user, "flock held by release, rollback, db.restore, env.*"),
            Entry(self.lock_info, 0o644, user, user, "who holds the lock, since when, its pid"),
            Entry(self.run_dir, 0o750, user, WEB_GROUP, "the colours' sockets `<colour>.sock` (0660), made by tmpfiles.d"),
            Entry(self.tmpfiles, 0o644, "root", "root", "makes the socket directory at boot"),
            Entry(self.sudoers, 0o440, "root", "root", "the deploy user's exact root commands"),
            Entry(self.backup_script, 0o755, "root", "root", "the backup script the nightly service runs"),
            Entry(self.caddy_site, 0o644, "root", "root", "the site's Caddy config"),
            *(Entry(self.unit_file(u), 0o644, "root", "root", "systemd unit") for u in units),
        ]

    # ------------------------------------------------------------ root commands

    def sudo_rules(self) -> list[tuple[str, str]]:
        """(verb, unit): everything the deploy user may run as root. Nothing else, no wildcard."""
        rules = [(verb, self.gunicorn(c)) for c in COLOURS for verb in COLOUR_VERBS]
        if self.site.celery:
            rules += [(verb, self.celery) for verb in CELERY_VERBS]
        return rules + [("start", unit) for unit in (self.backup_service, self.scratch_create, self.scratch_drop)]

    def sudo_commands(self) -> list[str]:
        """The sudoers lines: each rule under each path systemctl may be called by (`systemctl` minus its ``sudo -n``)."""
        commands = [systemctl(verb, unit).removeprefix("sudo -n ") for verb, unit in self.sudo_rules()]
        return [path + command.removeprefix(SYSTEMCTL) for path in SYSTEMCTL_PATHS for command in commands]

    def table(self) -> str:
        """Every path as a markdown table (``docs/architecture.md``)."""
        rows = ["| path | owner:group | mode | what |", "| --- | --- | --- | --- |"]
        for e in self.directories() + self.files():
            mode = "link" if e.mode == 0o777 else format(e.mode, "04o")
            rows.append(f"| `{e.path}` | {e.owner}:{e.group} | {mode} | {e.what} |")
        return "\n".join(rows) + "\n"
