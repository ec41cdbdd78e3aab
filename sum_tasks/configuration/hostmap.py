"""The host map: every path, unit, socket, lock and root command a site has on a host, declared once.

`HostMap(site)` names them; `directories` and `files` give each one's owner and mode, and
`sudo_commands` is the exact list the sudoers file allows, built by the same `systemctl` that
the tasks use to send those commands. ``docs/architecture.md`` shows the generated table.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .settings import Site

# gunicorn instances per site: the live one, the warm standby (the release before), and one a release starts.
COLOURS = ("blue", "green", "amber")
SRV = "/srv/sum"
RUN = "/run/sum"
SYSTEMD = "/etc/systemd/system"
ETC = "/etc/sum"
SYSTEMCTL = "/usr/bin/systemctl"
# sudoers matches the path as typed; merged-/usr hosts also resolve /bin/systemctl.
SYSTEMCTL_PATHS = (SYSTEMCTL, "/bin/systemctl")
CADDY_SITES = "/etc/caddy/sites-enabled"
# Caddy's own group: the sockets and media are open to it without Caddy joining any group (which takes a restart).
WEB_GROUP = "caddy"
# Longest Unix account name useradd accepts.
NAME_MAX = 32
# Verbs the deploy user may run on each gunicorn colour: starting one, stopping one now or in the background.
COLOUR_VERBS = ("start", "stop", "--no-block stop", "restart", "reset-failed")
# A release restarts the worker without waiting for its running tasks to finish (`--no-block`).
CELERY_VERBS = ("start", "stop", "restart", "--no-block restart")
# A site restore's media, in media/ (renames do not cross the bind mount), closed to Caddy; see `HostMap.media_unit`.
MEDIA_STAGING = ".sum-restore"
MEDIA_ACTIONS = ("stage", "switch", "back", "drop")
# The environment variable carrying `fab manage`'s arguments through sudo to the manage script.
MANAGE_ARGS = "SUM_MANAGE_ARGS"


class Entry(NamedTuple):
    """One path with its owner, group and mode, and what it is for."""

    kind: str
    path: str
    mode: int
    owner: str
    group: str
    what: str


class Colour(NamedTuple):
    """One gunicorn colour's paths: the link to the release it runs, the .env hash it started with, its socket, its unit."""

    link: str
    env_stamp: str
    socket: str
    unit: str


# Every path of a site: kind, path, mode, owner:group, what it is for (`HostMap.entries` fills in the names).
# Kinds: dir (provision makes it), file, link, mirror (the first fetching release makes it), rundir (tmpfiles.d or a unit
# makes it at boot), state (a unit makes it).
TABLE = """
dir   {srv}          0755  root:root      all sites
dir   {etc}          0755  root:root      configs of all sites' own services
dir   {root}         0751  {user}:{user}  the site root: the app and Caddy pass through, nobody else lists it
dir   {backups}      0700  {user}:{user}  database backups, `<slug>_db_<UTC>.sql.gz|zst` and `.sha256` beside each (`.media`: its site snapshot)
state {site_repo}    0700  {user}:{user}  site backups: a restic repository, one snapshot per backup (its dump, checksum, media/ and the release ledger, tagged `dump=<name>`), made by the first
file  {site_password} 0600 {user}:{user}  the site repository's password, made by the first backup (the data it guards is on this host anyway)
dir   {static}       0755  {user}:{user}  collectstatic's output, served by Caddy at /static/
dir   {media}        2750  {app}:{web}    uploads: the app writes, Caddy reads (new files take the group), through a nosymfollow bind mount
dir   {releases}     0750  {user}:{app}   `<UTC>Z-<sha8>/`: one commit's files, `.venv` link, `.release.env`
dir   {venvs}        0750  {user}:{app}   `<hash>/`: one venv per interpreter and requirements.txt
dir   {recovery}     2750  {user}:{app}   a snapshot's media is restored here (from the site repository or off-site); the app's group reads it to stage it
state {media_staging} 2700 {app}:{web}    in media/, not served (closed to Caddy): `new/` the media a restore stages, `old/` the media it replaced (kept until the next site backup)
dir   {colours}      0750  {user}:{app}   `<colour>` links to the release each colour runs, `<colour>.env` the .env hash it started with
file  {env}          0600  {user}:{user}  the site's secrets and settings; systemd reads it for the app
link  {current}      0777  {user}:{user}  link to the live release
link  {live_socket}  0777  {user}:{user}  link to the live colour's socket, which Caddy proxies to
file  {records}      0644  {user}:{user}  one JSON record per release attempt
mirror {repo}        0755  {user}:{user}  mirror of sum.repo_url (source `server`), made by the first release that fetches
file  {lock}         0644  {user}:{user}  flock held by release, rollback, db.restore, env.*
file  {lock_info}    0644  {user}:{user}  who holds the lock, since when, its pid
rundir {run_dir}     2750  {app}:{web}    the colours' sockets `<colour>.sock`: only the app and Caddy's group (Caddy, the deploy user) enter; made by tmpfiles.d at boot
rundir {redis_dir}   0700  {app}:{app}    the site's own Redis socket `redis.sock`, made by its unit
state {redis_data}   0700  {app}:{app}    the site's Redis data, made by its unit
state {beat_data}    0700  {app}:{app}    celery beat's schedule (with `sum.celery_beat`), made by its unit
file  {redis_conf}   0644  root:root      the site's Redis config: unix socket only, no TCP
file  {tmpfiles}     0644  root:root      makes the socket directory at boot
file  {sudoers}      0440  root:root      the deploy user's exact root commands
file  {backup_script} 0755 root:root      the backup script the nightly service runs
file  {alert_script} 0755 root:root      posts a failed unit's name to `sum.alerts.webhook` (with a webhook set)
file  {manage_script} 0755 root:root      `fab manage`: runs manage.py in the live release as the app's user (systemd-run)
file  {caddy_site}   0644  root:root      the site's Caddy config
file  {alert_conf}   0640  root:{user}    curl config naming `sum.alerts.webhook` (a secret URL); the alert unit, as the deploy user, reads it
file  {ping_conf}    0640  root:{user}    curl config naming `sum.alerts.success_url`, pinged after each good nightly backup
file  {offsite_key}  0640  root:{user}    the site's SSH key for the backup machine (with `sum.offsite.target` or an `sftp:` repository); `.pub` beside it
file  {offsite_known_hosts} 0644 root:root the backup machine's host key, the only one accepted
file  {offsite_env}  0640  root:{user}    the credentials of `sum.offsite.repository` (a copy of the operator's `offsite.env_file`), for restic alone
file  {restic_password} 0640 root:{user}  the off-site repository's encryption password (a copy of the operator's `offsite.password_file`)
file  {offsite_script} 0755 root:root     the off-site copy: restic sends the newest verified dump and media/ to the backup machine
file  {offsite_status} 0600 {user}:{user} the last good off-site copy: time, snapshot, dump (read by `check`)
file  {rehearsal_status} 0600 {user}:{user} the last rehearsal from the off-site copy: time, result, snapshot, dump, why it failed (read by `check`)
file  {acme_root}    0644  root:root      the root certificate of `sum.acme_ca`'s own HTTPS (with `sum.acme_ca_root`), which Caddy trusts for it
"""


def mount_unit(path: str) -> str:
    """The systemd mount unit name for `path` (``systemd-escape --path --suffix=mount``, for the characters a site path has)."""
    escaped = "".join(ch if ch.isalnum() or ch in "_." else f"\\x{ord(ch):02x}" for ch in path.strip("/").replace("/", "\0"))
    return escaped.replace("\\x00", "-") + ".mount"


def systemctl(verb: str, unit: str) -> str:
    """``systemctl VERB UNIT`` as root through sudo: the one spelling of every root command a task sends.

    The sudoers file allows exactly ``SYSTEMCTL VERB UNIT`` for the pairs `HostMap.sudo_rules` lists.
    """
    return f"sudo -n {SYSTEMCTL} {verb} {shlex.quote(unit)}"


class HostMap:
    """Where one site lives on a host. `root` moves the site root (only tests do, to run the backup script here)."""

    def __init__(self, site: Site, root: str = "") -> None:
        self.site = site
        slug = site.site_slug
        # The site root and what is in it.
        self.root = root or f"{SRV}/{slug}"
        self.env = f"{self.root}/.env"
        self.backups = f"{self.root}/backups"
        self.static = f"{self.root}/static"
        self.media = f"{self.root}/media"
        self.releases = f"{self.root}/releases"
        self.venvs = f"{self.root}/venvs"
        self.colours = f"{self.root}/colours"
        self.recovery = f"{self.root}/recovery"
        self.current = f"{self.root}/current"
        self.live_socket = f"{self.root}/live.sock"  # Caddy proxies here: a link to the live colour's socket
        self.records = f"{self.root}/releases.jsonl"
        self.repo = f"{self.root}/repo.git"
        self.lock = f"{self.root}/.lock"
        self.lock_info = f"{self.root}/.lock.info"
        # Outside it.
        self.run_dir = f"{RUN}/{slug}"
        self.unit_prefix = f"sum-{slug}"
        self.redis_dir = f"/run/{self.unit_prefix}-redis"
        self.redis_socket = f"{self.redis_dir}/redis.sock"
        self.redis_data = f"/var/lib/{self.unit_prefix}-redis"
        self.redis_conf = f"{ETC}/{self.unit_prefix}-redis.conf"
        self.backup_script = f"/usr/local/bin/{self.unit_prefix}-db"
        self.manage_script = f"/usr/local/bin/{self.unit_prefix}-manage"
        self.sudoers = f"/etc/sudoers.d/{self.unit_prefix}"
        self.tmpfiles = f"/etc/tmpfiles.d/{self.unit_prefix}.conf"
        self.caddy_site = f"{CADDY_SITES}/{self.unit_prefix}.caddy"
        self.acme_root = f"{ETC}/{self.unit_prefix}-acme-root.pem"
        self.offsite_key = f"{ETC}/{self.unit_prefix}-offsite.key"
        self.offsite_known_hosts = f"{ETC}/{self.unit_prefix}-offsite.known_hosts"
        self.restic_password = f"{ETC}/{self.unit_prefix}-restic.password"
        self.offsite_env = f"{ETC}/{self.unit_prefix}-offsite.env"
        self.offsite_script = f"/usr/local/bin/{self.unit_prefix}-offsite"
        self.offsite_status = f"{self.backups}/.offsite"
        self.offsite_service = f"{self.unit_prefix}-offsite.service"
        self.rehearsal_status = f"{self.backups}/.rehearsal"
        self.offsite_rehearse = f"{self.unit_prefix}-offsite-rehearse.service"
        self.offsite_rehearse_timer = f"{self.unit_prefix}-offsite-rehearse.timer"
        self.media_template = f"{self.unit_prefix}-media@.service"
        self.site_repo = f"{self.backups}/site.restic"
        self.site_password = f"{self.backups}/.site.restic-password"
        self.media_staging = f"{self.media}/{MEDIA_STAGING}"
        self.alert_conf = f"{ETC}/{self.unit_prefix}-alert.curl"
        self.alert_script = f"/usr/local/bin/{self.unit_prefix}-alert"
        self.ping_conf = f"{ETC}/{self.unit_prefix}-ping.curl"
        # Units.
        self.gunicorn_template = f"{self.unit_prefix}-gunicorn@.service"
        self.celery = f"{self.unit_prefix}-celery.service"
        self.celery_beat = f"{self.unit_prefix}-celerybeat.service"
        self.beat_data = f"/var/lib/{self.unit_prefix}-celerybeat"
        self.backup_service = f"{self.unit_prefix}-backup.service"
        self.backup_timer = f"{self.unit_prefix}-backup.timer"
        self.scratch_create = f"{self.unit_prefix}-scratchdb-create.service"
        self.scratch_drop = f"{self.unit_prefix}-scratchdb-drop.service"
        # db.restore's, run as postgres: make the database a backup is loaded into, switch it in, switch back.
        self.restore_create = f"{self.unit_prefix}-restoredb-create.service"
        self.restore_switch = f"{self.unit_prefix}-restoredb-switch.service"
        self.restore_back = f"{self.unit_prefix}-restoredb-back.service"
        self.redis = f"{self.unit_prefix}-redis.service"
        self.alert_template = f"{self.unit_prefix}-alert@.service"
        self.standby_service = f"{self.unit_prefix}-standby.service"
        self.standby_timer = f"{self.unit_prefix}-standby.timer"
        self.media_mount = mount_unit(self.media)

    @property
    def app_user(self) -> str:
        """The app's own system user and group (gunicorn, celery, its Redis): ``sum-<slug>``, shortened with a hash past 32 characters."""
        name = self.unit_prefix
        if len(name) > NAME_MAX:
            name = name[:NAME_MAX - 7] + "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
        return name

    def release(self, release_id: str) -> str:
        return f"{self.releases}/{release_id}"

    def venv(self, digest: str) -> str:
        return f"{self.venvs}/{digest}"

    def colour(self, colour: str) -> Colour:
        return Colour(f"{self.colours}/{colour}", f"{self.colours}/{colour}.env", f"{self.run_dir}/{colour}.sock",
                      f"{self.unit_prefix}-gunicorn@{colour}.service")

    def schedule(self, name: str) -> tuple[str, str]:
        """The service and timer of the `sum.schedule` entry `name`."""
        unit = f"{self.unit_prefix}-schedule-{name}"
        return f"{unit}.service", f"{unit}.timer"

    @staticmethod
    def unit_file(unit: str) -> str:
        return f"{SYSTEMD}/{unit}"

    def app_units(self) -> list[str]:
        """The units serving the site: the gunicorn colours, and celery (and its beat) when enabled."""
        return [self.colour(c).unit for c in COLOURS] + self.celery_units()

    def celery_units(self) -> list[str]:
        """The worker when `sum.celery`, and beat when `sum.celery_beat`: what a release restarts after its switch."""
        return ([self.celery] if self.site.celery else []) + ([self.celery_beat] if self.site.celery_beat else [])

    def media_unit(self, action: str) -> str:
        """The app-user unit that does one of `MEDIA_ACTIONS` to a site restore's media: stage it beside the live media, switch
        it in, put the replaced media back, drop the replaced media."""
        return self.media_template.replace("@", f"@{action}")

    def restore_units(self) -> list[str]:
        """db.restore's postgres units: create the database a backup is loaded into, switch it in, switch back."""
        return [self.restore_create, self.restore_switch, self.restore_back]

    @staticmethod
    def unit_colour(unit: str) -> str:
        """``blue`` for ``sum-x-gunicorn@blue.service``; empty for a unit that is not a gunicorn colour."""
        _, at, rest = unit.partition("-gunicorn@")
        colour = rest.removesuffix(".service")
        return colour if at and colour in COLOURS else ""

    # ------------------------------------------------------------ owners and modes

    def entries(self) -> list[Entry]:
        """Every path of the site with its owner, group and mode (`TABLE`); directories first, in the order provision makes them."""
        names = {**vars(self), "srv": SRV, "etc": ETC, "web": WEB_GROUP, "user": self.site.deploy_user, "app": self.app_user}
        units = [self.gunicorn_template, self.celery, self.celery_beat, self.redis, self.media_mount, self.backup_service, self.backup_timer,
                 self.scratch_create, self.scratch_drop, *self.restore_units(), self.standby_service, self.standby_timer, self.alert_template,
                 self.offsite_service, self.media_template, self.offsite_rehearse, self.offsite_rehearse_timer,
                 *(u for name in self.site.schedule for u in self.schedule(name))]
        rows = [line.split(None, 4) for line in TABLE.strip().splitlines()]
        rows += [["file", self.unit_file(u), "0644", "root:root", "systemd unit"] for u in units]
        return [Entry(kind, path.format(**names), int(mode, 8), *owner.format(**names).split(":"), what)
                for kind, path, mode, owner, what in rows]

    def directories(self) -> list[Entry]:
        """The directories provision makes, in order."""
        return [e for e in self.entries() if e.kind == "dir"]

    # ------------------------------------------------------------ root commands

    def sudo_rules(self) -> list[tuple[str, str]]:
        """(verb, unit): everything the deploy user may run as root. Nothing else, no wildcard."""
        rules = [(verb, self.colour(c).unit) for c in COLOURS for verb in COLOUR_VERBS]
        rules += [(verb, unit) for unit in self.celery_units() for verb in CELERY_VERBS]
        offsite = [self.offsite_service, self.offsite_rehearse] if self.site.offsite.enabled else []
        media = [self.media_unit(action) for action in MEDIA_ACTIONS]
        starts = [self.backup_service, self.scratch_create, self.scratch_drop, *self.restore_units(), *media, *offsite]
        return rules + [("start", unit) for unit in starts]

    def sudo_commands(self) -> list[str]:
        """The sudoers lines: each rule under each path systemctl may be called by (`systemctl` minus its ``sudo -n``),
        and the manage script with no arguments (``""``: its arguments come in `MANAGE_ARGS`, kept by sudoers)."""
        commands = [systemctl(verb, unit).removeprefix("sudo -n ") for verb, unit in self.sudo_rules()]
        return [path + command.removeprefix(SYSTEMCTL) for path in SYSTEMCTL_PATHS for command in commands] + [f'{self.manage_script} ""']

    def table(self) -> str:
        """Every path as a markdown table (``docs/architecture.md``)."""
        rows = ["| path | owner:group | mode | what |", "| --- | --- | --- | --- |"]
        for e in self.entries():
            mode = "link" if e.kind == "link" else format(e.mode, "04o")
            rows.append(f"| `{e.path}` | {e.owner}:{e.group} | {mode} | {e.what} |")
        return "\n".join(rows) + "\n"
