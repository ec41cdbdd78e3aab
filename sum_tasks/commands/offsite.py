"""The off-site copy's commands and what they print: the status lines the copy and the rehearsal leave, and restic's
snapshot list."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from ..configuration import ConfigError, Site
from ..configuration.hostmap import systemctl
from .backup import fields, format_age
from .lock import BUSY
from .script import Script, q

# The backup machine's side: the one thing this site's key may run there.
FORCED_COMMAND = "rclone serve restic --stdio --append-only {path}"
TARGET_ROOT = "/srv/restic"

# restic's documented environment variables (its manual, "Environment Variables") that `offsite.env_file` may set: the
# backends' credentials and endpoints, and two tuning knobs. True marks a secret, which no output may show.
RESTIC_ENV = {
    "AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": True, "AWS_SESSION_TOKEN": True, "AWS_DEFAULT_REGION": False,
    "AZURE_ACCOUNT_NAME": False, "AZURE_ACCOUNT_KEY": True, "AZURE_ACCOUNT_SAS": True, "AZURE_ENDPOINT_SUFFIX": False,
    "B2_ACCOUNT_ID": False, "B2_ACCOUNT_KEY": True,
    "GOOGLE_PROJECT_ID": False,
    "OS_AUTH_URL": False, "OS_REGION_NAME": False, "OS_USERNAME": False, "OS_USER_ID": False, "OS_PASSWORD": True,
    "OS_TENANT_ID": False, "OS_TENANT_NAME": False, "OS_USER_DOMAIN_NAME": False, "OS_USER_DOMAIN_ID": False,
    "OS_PROJECT_NAME": False, "OS_PROJECT_DOMAIN_NAME": False, "OS_PROJECT_DOMAIN_ID": False, "OS_TRUST_ID": False,
    "OS_APPLICATION_CREDENTIAL_ID": False, "OS_APPLICATION_CREDENTIAL_NAME": False, "OS_APPLICATION_CREDENTIAL_SECRET": True,
    "OS_STORAGE_URL": False, "OS_AUTH_TOKEN": True,
    "ST_AUTH": False, "ST_USER": False, "ST_KEY": True,
    "RESTIC_REST_USERNAME": False, "RESTIC_REST_PASSWORD": True,
    "RESTIC_COMPRESSION": False, "RESTIC_PACK_SIZE": False,
}
# Documented too, but refused, and why.
SET_BY_SUM = ("RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")
HOST_FILES = ("AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS", "RESTIC_CACERT",
              "RESTIC_TLS_CLIENT_CERT", "RESTIC_CACHE_DIR", "TMPDIR")
# What each repository kind cannot work without.
REQUIRED_ENV = {"s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "b2": ("B2_ACCOUNT_ID", "B2_ACCOUNT_KEY"),
                "azure": ("AZURE_ACCOUNT_NAME",)}
ENV_KEY = "offsite.env_file"


def parse_env_file(site: Site, text: str) -> dict[str, str]:
    """`sum.offsite.env_file`'s ``NAME=value`` lines (blank lines and ``#`` comments skipped, one pair of quotes around a
    value dropped), each name one of `RESTIC_ENV`; `ConfigError` names the line and the name, never a value."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        where = f"line {number}: {name}" if name.isidentifier() else f"line {number}"
        if not equals or not name.isidentifier():
            raise ConfigError(ENV_KEY, f"{where}: each line must be NAME=value")
        if name in SET_BY_SUM:
            raise ConfigError(ENV_KEY, f"{where}: set by sum_tasks (offsite.repository, offsite.password_file), not here")
        if name in HOST_FILES:
            raise ConfigError(ENV_KEY, f"{where}: names a file on the host, which provision does not install; give the "
                              "credentials themselves")
        if name not in RESTIC_ENV:
            raise ConfigError(ENV_KEY, f"{where}: not one of restic's documented credential variables "
                              "(AWS_*, AZURE_*, B2_*, GOOGLE_PROJECT_ID, OS_*, ST_*, RESTIC_REST_*; see the runbook's Off-site copies)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not value or "\0" in value:
            raise ConfigError(ENV_KEY, f"{where}: has no value")
        if name in values:
            raise ConfigError(ENV_KEY, f"{where}: given twice")
        values[name] = value
    if not values:
        raise ConfigError(ENV_KEY, "holds no NAME=value line")
    kind = site.offsite.repository.split(":", 1)[0]
    missing = [name for name in REQUIRED_ENV.get(kind, ()) if name not in values]
    if missing:
        raise ConfigError(ENV_KEY, f"a {kind}: repository needs {' and '.join(missing)}")
    if ("RESTIC_REST_USERNAME" in values) != ("RESTIC_REST_PASSWORD" in values):
        raise ConfigError(ENV_KEY, "RESTIC_REST_USERNAME and RESTIC_REST_PASSWORD go together")
    if "RESTIC_REST_USERNAME" in values and kind != "rest":
        raise ConfigError(ENV_KEY, "RESTIC_REST_USERNAME and RESTIC_REST_PASSWORD only apply to a rest: repository")
    return values


def host_env(site: Site, values: dict[str, str]) -> tuple[str, list[str]]:
    """The host's copy of the credentials (``NAME=value`` lines, for the off-site script) and the secrets in it.

    restic before 0.16 (Debian 12 has 0.14) ignores RESTIC_REST_USERNAME/PASSWORD: a REST server's login goes into the
    repository URL instead, here, in this root:deploy 0640 file only; restic shows such a URL's password as ``***``."""
    values = dict(values)
    secrets = [value for name, value in values.items() if RESTIC_ENV[name]]
    user, password = values.pop("RESTIC_REST_USERNAME", ""), values.pop("RESTIC_REST_PASSWORD", "")
    if user:
        kind, _, url = site.offsite.repository.partition(":")
        scheme, _, rest = url.partition("://")
        login = f"{quote(user, safe='')}:{quote(password, safe='')}"
        values["RESTIC_REPOSITORY"] = f"{kind}:{scheme}://{login}@{rest}"
        secrets.append(quote(password, safe=""))
    return "".join(f"{name}={value}\n" for name, value in values.items()), secrets


def login(site: Site) -> tuple[str, int]:
    """``user@host`` and the port restic reaches over SSH (`sum.offsite.target`, or an ``sftp:`` repository)."""
    return site.offsite.ssh_login or ("", 22)


def script_context(site: Site) -> dict[str, object]:
    """The off-site script's template values (its units' too)."""
    target, port = login(site)
    program = "rclone" if site.offsite.target else "sftp" if site.offsite.ssh_login else ""
    return {"site": site, "login": target, "port": port, "busy": BUSY, "program": program,
            "repository": q(site.offsite.repository or "rclone:"), "credentials": bool(site.offsite.env_file)}


def known_hosts_line(site: Site) -> str:
    target, port = login(site)
    host = target.rsplit("@", 1)[-1]
    return f"{host if port == 22 else f'[{host}]:{port}'} {site.offsite.host_key}\n"


def authorized_keys_line(site: Site, public_key: str) -> str:
    """The line for the backup machine's ``authorized_keys``: this site's key, forced into its own append-only repository
    (`target`); for an ``sftp:`` repository, the key with nothing but SFTP (the server decides what it may delete)."""
    if not site.offsite.target:
        return f"restrict {public_key.strip()}\n"
    command = FORCED_COMMAND.format(path=f"{TARGET_ROOT}/{site.site_slug}")
    return f'restrict,command="{command}" {public_key.strip()}\n'


def copy_script(site: Site) -> Script:
    """Start the off-site copy (the deploy user's sudo rule), then print the status line it left."""
    return Script("off-site copy", f"{systemctl('start', site.paths.offsite_service)} && cat {q(site.paths.offsite_status)}")


def snapshots_script(site: Site) -> Script:
    return Script("list off-site snapshots", f"{q(site.paths.offsite_script)} snapshots")


def restore_script(site: Site, snapshot: str) -> Script:
    """Restore `snapshot` into recovery/ (its dump straight into backups/, its media for a site restore to stage)."""
    return Script(f"restore snapshot {snapshot}", f"{q(site.paths.offsite_script)} restore {q(snapshot)}")


def rehearse_script(site: Site, snapshot: str, by: str) -> Script:
    """The off-site script's rehearsal of `snapshot`, as the timer runs it but refused at once when the site is locked
    (exit `BUSY`); `by` names who asked, for the lock's holder line."""
    return Script(f"rehearse snapshot {snapshot}", f"{q(site.paths.offsite_script)} rehearse {q(snapshot)} --by {q(by)}")


def parse_restored(text: str) -> tuple[str, dict | None]:
    """The dump the restore put in backups/, and the release that was live when the snapshot was taken (the ledger's
    last good record), from the restore script's output."""
    head, _, ledger = text.partition("@@ledger")
    dump = next((line.split("=", 1)[1] for line in head.splitlines() if line.startswith("RESTORED dump=")), "")
    live = None
    for line in ledger.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("result") == "good" and record.get("sha"):
            live = record
    return dump, live


def public_key_script(site: Site) -> Script:
    return Script("read the site's off-site key", f"cat {q(site.paths.offsite_key)}.pub")


@dataclass(frozen=True)
class Status:
    """The last good off-site copy, from the status line (``OFFSITE at=... snapshot=... dump=...``)."""

    at: int
    snapshot: str
    dump: str
    fields: dict[str, str]

    def describe(self, now: int) -> str:
        copied = self.fields.get("copied", "?")
        return (f"snapshot {self.snapshot[:8]} of {self.dump}, {format_age(now - self.at)} old; "
                f"{copied} site backups copied, {self.fields.get('seconds', '?')}s")


def parse_status(text: str) -> Status | None:
    line = next((line for line in text.splitlines() if line.startswith("OFFSITE ")), "")
    got = fields(line)
    if not got.get("at", "").isdigit() or not got.get("snapshot"):
        return None
    return Status(int(got["at"]), got["snapshot"], got.get("dump", ""), got)


@dataclass(frozen=True)
class Rehearsal:
    """The last rehearsal from the off-site copy, from its status line (``REHEARSAL at=... result=passed|failed ...``)."""

    at: int
    passed: bool
    fields: dict[str, str]
    reason: str

    def detail(self) -> str:
        """What was rehearsed and what it found (or, failed, where and why)."""
        got = self.fields
        source = f"{got.get('dump', '-')} of snapshot {got.get('snapshot', '?')[:8]}"
        if not self.passed:
            return f"at {got.get('step', '?')}: {self.reason or 'no reason given'} ({source})"
        rows = got.get("rows", "")
        migrations = (f"{got.get('pending', '?')} migrations not applied in it" if got.get("migrations") == "pending"
                      else f"migrate --check {got.get('migrations', '?')}")
        return (f"{source}, {got.get('tables', '?')} tables, {f'{int(rows):,}' if rows.isdigit() else '?'} rows, {migrations}, "
                f"{got.get('seconds', '?')}s")

    def describe(self, now: int) -> str:
        return f"{'passed' if self.passed else 'FAILED'} {format_age(now - self.at)} ago{':' if self.passed else ''} {self.detail()}"


def parse_rehearsal(text: str) -> Rehearsal | None:
    """The ``REHEARSAL`` line of the status file (or of a rehearsal's output); None when there is none."""
    line = next((line for line in reversed(text.splitlines()) if line.startswith("REHEARSAL ")), "")
    head, _, reason = line.partition(" reason=")
    got = fields(head)
    if not got.get("at", "").isdigit() or got.get("result") not in ("passed", "failed"):
        return None
    return Rehearsal(int(got["at"]), got["result"] == "passed", got, reason.strip())


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: str
    dump: str
    paths: tuple[str, ...]


def parse_snapshots(text: str) -> list[Snapshot]:
    """restic's ``snapshots --json``, newest first."""
    snapshots = []
    for entry in json.loads(text or "[]") or []:
        dump = next((t.split("=", 1)[1] for t in entry.get("tags", []) if t.startswith("dump=")), "")
        when = datetime.fromisoformat(entry["time"][:19]).replace(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        snapshots.append(Snapshot(entry["id"], when, dump, tuple(entry.get("paths", []))))
    return sorted(snapshots, key=lambda s: s.time, reverse=True)
