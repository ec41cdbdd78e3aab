"""Every ``sum`` setting, declared once: name, type, default, rule and help, as fields of `Site`.

The defaults handed to Invoke (`defaults`), validation (`load_site`) and the configuration
reference (``docs/configuration.md``, from `reference`) all come from these declarations, so adding
a setting is one field here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from invoke.exceptions import Exit

from .hostmap import HostMap

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOST_RE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
PYTHON_RE = re.compile(r"^(?:python3(?:\.\d{1,2})?|/[A-Za-z0-9._/-]+)$")
KEY_RE = re.compile(r"^(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}(?: [^\n\r]*)?$")
REPO_RE = re.compile(r"^(?:(?:https?|ssh|git|file)://\S+|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:\S+|/\S+)$")
ONCALENDAR_RE = re.compile(r"^[A-Za-z0-9*:/.,~ -]{1,64}$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{1,99}$")
SIZE_RE = re.compile(r"[1-9][0-9]{0,5}(kb|mb|gb)")
PG_NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")
EMAIL_RE = re.compile(r"^[^@\s'\"{}]+@[^@\s'\"{}]+$")
ACME_URL_RE = re.compile(r"^https://[A-Za-z0-9._~:/?#@!$&()*+,;=%-]+$")
PEM_RE = re.compile(r"^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----\n?$")

RESERVED_USERS = ("root", "postgres", "caddy", "www-data", "redis", "nobody", "daemon", "bin", "sys", "sshd", "systemd-journal")
RESERVED_DATABASES = ("postgres", "template0", "template1")
HOOK_POINTS = ("before_migrate", "before_switch", "after_switch", "after_failure", "after_restore")


class ConfigError(Exit):
    """A one-line configuration error; fab prints it and exits non-zero."""

    def __init__(self, key: str, rule: str, value: Any = None) -> None:
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"sum.{key}: {rule}{shown}", code=2)


Check = Callable[[str, Any], Any]


def setting(default: Any, rule: str, help: str, check: Check, required: bool = False, default_text: str = "") -> Any:
    """One setting: a dataclass field carrying its rule (shown in errors and docs), help and checker."""
    meta = {"rule": rule, "help": help, "check": check, "required": required, "default_text": default_text}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- checkers: (key, raw value) -> typed value


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ConfigError(key, "must be true or false", value)


def _int(low: int, high: int) -> Check:
    def check(key: str, value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(key, f"must be a whole number from {low} to {high}", value) from None
        if isinstance(value, bool) or not low <= number <= high:
            raise ConfigError(key, f"must be a whole number from {low} to {high}", value)
        return number

    return check


def _list(key: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, "must be a list", value)
    return list(value)


def _match(pattern: re.Pattern[str], rule: str) -> Check:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ConfigError(key, rule, value)
        return value

    return check


def _each(inner: Check) -> Check:
    def check(key: str, value: Any) -> tuple[Any, ...]:
        return tuple(inner(key, item) for item in _list(key, value))

    return check


def _choice(*choices: str) -> Check:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(choices)}", value)
        return value

    return check


def _optional(inner: Check) -> Check:
    return lambda key, value: inner(key, value) if value else ""


def validate_slug(value: Any, key: str = "site_slug") -> str:
    slug = _match(SLUG_RE, "must be 1-63 of a-z, 0-9 and '-', starting with a letter or digit")(key, value)
    if slug.replace("-", "_") in RESERVED_DATABASES or slug.startswith("pg-"):
        raise ConfigError(key, "names a PostgreSQL system role or database; choose another", slug)
    return slug


def _pg_name(key: str, value: Any) -> str:
    name = _match(PG_NAME_RE, "must be 1-63 of a-z, 0-9 and _")(key, value)
    if name in RESERVED_DATABASES or name.startswith("pg_"):
        raise ConfigError(key, "names a PostgreSQL system role or database; choose another", name)
    return name


def validate_domain(value: Any, key: str = "domains") -> str:
    rule = "each must be a lowercase DNS name such as example.com"
    if not isinstance(value, str) or len(value) > 253 or value.endswith("."):
        raise ConfigError(key, rule, value)
    labels = value.split(".")
    if len(labels) < 2 or not all(LABEL_RE.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ConfigError(key, rule, value)
    return value


def _domains(key: str, value: Any) -> tuple[str, ...]:
    domains = _list(key, value)
    if not domains:
        raise ConfigError(key, "needs at least one domain; the first is the primary")
    for domain in domains:
        validate_domain(domain, key)
    if len(set(domains)) != len(domains):
        raise ConfigError(key, "must not repeat a domain", domains)
    return tuple(domains)


def _items(key: str, value: Any, rule: str) -> list[tuple[Any, Any]]:
    """A mapping setting's (name, value) pairs; anything else than a mapping is refused with `rule`."""
    given = value or {}
    if not hasattr(given, "keys"):
        raise ConfigError(key, rule, given)
    return [(name, given[name]) for name in given.keys()]  # noqa: SIM118 (Invoke's DataProxy has keys(), no iteration)


def _redirects(key: str, value: Any) -> dict[str, str]:
    return {validate_domain(source, f"{key}.{source}"): validate_domain(target, f"{key}.{source}")
            for source, target in _items(key, value, "must map a domain to the domain it redirects to")}


def _pem(key: str, value: Any) -> str:
    text = value.strip() + "\n" if isinstance(value, str) and value.strip() else value
    return _optional(_match(PEM_RE, "must be one PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"))(key, text)


def validate_identifier(key: str, value: Any, dotted: bool = False) -> str:
    parts = value.split(".") if isinstance(value, str) and dotted else [value]
    if not all(isinstance(p, str) and p.isidentifier() and p.isascii() and not keyword.iskeyword(p) for p in parts):
        what = "a dotted Python module path" if dotted else "a Python identifier"
        raise ConfigError(key, f"must be {what}", value)
    return value


def _repo_url(key: str, value: Any) -> str:
    if isinstance(value, str) and value.startswith("-"):
        raise ConfigError(key, "must not start with '-' (git would read it as an option)", value)
    url = _match(REPO_RE, "must be a git URL (https://, ssh://, file://, user@host:path) or an absolute path")(key, value)
    # A user before '@' is fine for ssh (git@host); anything else there is a password or a token, which every local user sees in `ps`.
    if re.search(r"://[^/@]*:[^/@]*@", url) or re.match(r"^(?:https?|git|file)://[^/@]*@", url):
        raise ConfigError(key, "must not hold a password or token (it would show in process lists): give the server a deploy key")
    return url


_user = _match(USER_RE, "must be a Unix user name (a-z, 0-9, '_', '-', at most 32)")


def _deploy_user(key: str, value: Any) -> str:
    if value in RESERVED_USERS:
        raise ConfigError(key, "must not be a system account (it owns the sites' code and secrets)", value)
    if value.startswith("sum-"):
        raise ConfigError(key, "must not start with 'sum-' (the sites' own app users are named so)", value)
    return _user(key, value)


def _hooks(key: str, value: Any) -> dict[str, tuple[str, ...]]:
    given = value or {}
    reject_unknown(given, HOOK_POINTS, f"{key}.")
    hooks = {}
    for point in HOOK_POINTS:
        commands = given.get(point, [])
        commands = [commands] if isinstance(commands, str) else _list(f"{key}.{point}", commands)
        for command in commands:
            if not isinstance(command, str) or not command.strip() or "\n" in command:
                raise ConfigError(f"{key}.{point}", "each must be a one-line shell command", command)
        hooks[point] = tuple(commands)
    return hooks


SCHEDULE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
# Management command words: no shell or systemd specifier characters, so they go into a unit as they are.
COMMAND_WORD_RE = re.compile(r"[A-Za-z0-9_.:=,/@+-]+")


@dataclass(frozen=True)
class Scheduled:
    """One ``sum.schedule`` entry: a management command and when systemd runs it."""

    command: tuple[str, ...]
    when: str


def _schedule(key: str, value: Any) -> dict[str, Scheduled]:
    entries = {}
    for name, entry in _items(key, value, "must map names to {command, when}"):
        where = f"{key}.{name}"
        if not isinstance(name, str) or not SCHEDULE_NAME_RE.fullmatch(name):
            raise ConfigError(where, "a schedule's name is 1-40 of a-z, 0-9, '_' and '-'", name)
        if not hasattr(entry, "keys"):
            raise ConfigError(where, "must be {command: ..., when: ...}", entry)
        reject_unknown(entry, ("command", "when"), f"{where}.")
        command = str(entry.get("command", "")).split()
        if not command or not all(COMMAND_WORD_RE.fullmatch(word) for word in command):
            raise ConfigError(f"{where}.command", "a management command and its arguments: letters, digits and _.:=,/@+- only",
                              entry.get("command"))
        when = _match(ONCALENDAR_RE, "must be a systemd OnCalendar expression (`*:0/10`, `daily`)")(f"{where}.when", entry.get("when", ""))
        entries[name] = Scheduled(tuple(command), when)
    return entries


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Backups:
    """``sum.backups``: the site's database backups."""

    keep: int = setting(14, "1-10000", "backups kept by retention (`db.backup --keep` overrides)", _int(1, 10000))
    format: str = setting("gzip", "`gzip` or `zstd`", "`gzip` (`.sql.gz`) or `zstd` (`.sql.zst`: smaller, quicker to verify)",
                          _choice("gzip", "zstd"))
    schedule: str = setting("*-*-* 03:15:00", "a systemd `OnCalendar` expression", "when the nightly backup timer runs",
                            _match(ONCALENDAR_RE, "must be a systemd OnCalendar expression"))
    max_age_hours: int = setting(26, "1-8760", "`check` fails when the newest verified backup is older than this (a nightly run "
                                 "missed or failed)", _int(1, 8760))


ALERT_URL_RE = re.compile(r"^https?://[^\s\"\\]+$")
_alert_url = _optional(_match(ALERT_URL_RE, "must be an http(s):// URL (no spaces, quotes or backslashes)"))


@dataclass(frozen=True)
class Alerts:
    """``sum.alerts``: who hears about the site's unattended jobs (the nightly backup)."""

    webhook: str = setting("", "an `http(s)://` URL", "a failed nightly backup POSTs JSON here (`text`, `content`, `site`, `host`, `unit`, "
                           "`event`: Slack, Mattermost, Discord and most uptime services read it); the URL is a secret: kept root:deploy "
                           "0640 in `/etc/sum`, never in argv", _alert_url)
    success_url: str = setting("", "an `http(s)://` URL", "pinged (GET) after each good nightly backup, so a dead-man's-switch service "
                               "notices a missing run", _alert_url)


HOST_KEY_RE = re.compile(r"^(?:ssh-(?:ed25519|rsa)|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/]+={0,3}$")
TARGET_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}@[A-Za-z0-9._-]+(?::\d{1,5})?$")
# restic's own repository kinds that need nothing on the host but their URL and, in `offsite.env_file`, their credentials.
REPOSITORY_KINDS = ("s3", "rest", "sftp", "b2", "azure", "gs", "swift")
REPOSITORY_RE = re.compile(rf"^(?:{'|'.join(REPOSITORY_KINDS)}):[A-Za-z0-9._~:/?#@!$&()*+,;=%\[\]-]+$")
SFTP_RE = re.compile(r"^sftp:(?://(?:(?P<user>[^@/:]+)@)?(?P<host>[A-Za-z0-9._-]+)(?::(?P<port>\d{1,5}))?/"
                     r"|(?:(?P<user2>[^@/:]+)@)?(?P<host2>[A-Za-z0-9._-]+):)")
PATH_RE = re.compile(r"^[^\0\n]{1,4096}$")


def _repository(key: str, value: Any) -> str:
    # The value is never echoed back: a mistyped URL may still hold a password.
    url = value if isinstance(value, str) else ""
    address = url.split(":", 1)[-1].removeprefix("//")
    address = address.split("://", 1)[-1].split("/", 1)[0]
    if ":" in address.rpartition("@")[0]:
        raise ConfigError(key, "must not hold a password (restic and logs would show it): put it in offsite.env_file "
                          "(RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD for rest:)")
    if not REPOSITORY_RE.fullmatch(url):
        raise ConfigError(key, f"must be a restic repository URL ({', '.join(k + ':...' for k in REPOSITORY_KINDS)}), "
                          "such as s3:https://host/bucket/path or rest:https://host:8000/site/")
    if url.startswith("sftp:") and not SFTP_RE.match(url):
        raise ConfigError(key, "an sftp: repository is sftp:user@host:/path or sftp://user@host:port//path")
    return url


def sftp_login(url: str) -> tuple[str, int]:
    """``[user@]host`` and the port of an ``sftp:`` repository URL."""
    found = SFTP_RE.match(url)
    if not found:
        return "", 22
    user, host = found["user"] or found["user2"], found["host"] or found["host2"]
    return (f"{user}@{host}" if user else host), int(found["port"] or 22)


@dataclass(frozen=True)
class Offsite:
    """``sum.offsite``: encrypted copies of each backup off the host: by default, append-only on a second machine reached
    over SSH (`target`); or in any restic repository (`repository`: object storage, a REST server)."""

    target: str = setting("", "`user@host[:port]`", "the backup machine: its `authorized_keys` gives this site's key a forced "
                          "`rclone serve restic --stdio --append-only` (see the runbook's Off-site copies); the reference "
                          "target, and the only one where the host itself makes sure the VPS can never delete",
                          _optional(_match(TARGET_RE, "must be user@host or user@host:port")))
    repository: str = setting("", "a restic repository URL: `s3:`, `rest:`, `sftp:`, `b2:`, `azure:`, `gs:`, `swift:`; no password",
                              "instead of `target`: any restic repository (`s3:https://s3.example.com/bucket/acme`, "
                              "`rest:https://backup.example:8000/acme/`); append-only is then the operator's job: credentials "
                              "that cannot delete, object lock or `--append-only` on the server (see the runbook's Off-site copies)",
                              _optional(_repository))
    env_file: str = setting("", "a path on the operator's machine: `NAME=value` lines of restic's documented variables",
                            "the credentials of `repository` (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `RESTIC_REST_USERNAME`, "
                            "`RESTIC_REST_PASSWORD`...): provision copies them root:deploy 0640 to the host, where only restic "
                            "gets them, in its environment; keep the file in the agency's password manager",
                            _optional(_match(PATH_RE, "must be a path")))
    host_key: str = setting("", "`<type> <base64>`, from `ssh-keyscan`", "the SSH host key of `target` (or of an `sftp:` repository's "
                            "host): the only key the VPS accepts from it",
                            _optional(_match(HOST_KEY_RE, "must be one SSH host key: `ssh-ed25519 AAAA...`")))
    password_file: str = setting("", "a path on the operator's machine", "the repository's encryption password, made here by the first "
                                 "provision (0600) and copied to the VPS; recovery needs it: keep it in the agency's password manager",
                                 _optional(_match(PATH_RE, "must be a path")),
                                 default_text="`~/.config/sum_tasks/<slug>.restic-password`")
    rehearse: str = setting("monthly", "a systemd `OnCalendar` expression", "when the host rehearses a restore of the latest snapshot's "
                            "dump into a scratch database (up to an hour later, at random); a failure alerts, `check` shows the last "
                            "result", _match(ONCALENDAR_RE, "must be a systemd OnCalendar expression (`monthly`, `*-*-01 05:00:00`)"))

    @property
    def enabled(self) -> bool:
        """The site has off-site copies (to `target` or `repository`)."""
        return bool(self.target or self.repository)

    @property
    def ssh_login(self) -> tuple[str, int] | None:
        """``user@host`` and port when restic reaches the repository over SSH with the site's key (`target`, an
        ``sftp:`` repository); None otherwise."""
        if self.target:
            login, _, port = self.target.partition(":")
            return login, int(port or 22)
        if self.repository.startswith("sftp:"):
            return sftp_login(self.repository)
        return None


@dataclass(frozen=True)
class Site:
    """One validated site: everything the tasks need to know, nothing remote."""

    site_slug: str = setting("", "`^[a-z0-9][a-z0-9-]{0,62}$`, not a PostgreSQL system name",
                             "the site's directory, units, role and database names", lambda key, value: validate_slug(value, key), required=True)
    domains: tuple[str, ...] = setting([], "lowercase DNS names, at least one, none repeated",
                                       "the site's domains; the first is the primary (health checks, `SITE_DOMAIN`)", _domains)
    project_module: str = setting("", "a Python identifier", "the Django project: `<module>.settings.production`, `<module>.wsgi`",
                                  lambda key, value: validate_identifier(key, value), required=True)
    repo_url: str = setting("", "`https://`, `ssh://`, `git@host:path`, `file://` or an absolute path; no credentials",
                            "git URL the server fetches releases from", _optional(_repo_url))
    deploy_user: str = setting("deploy", "a Unix user name, not a system account",
                               "the operator's login for every task but provision; owns the code, .env and backups (the app runs as `sum-<slug>`)",
                               _deploy_user)
    admin_user: str = setting("root", "a Unix user name", "provision's user when the host comes from `sum.hosts`", _user)
    hosts: tuple[str, ...] = setting([], "`[user@]host[:port]` or ssh config aliases", "default targets when `-H` is absent",
                                     _each(_match(HOST_RE, "each must be [user@]host[:port]")))
    python: str = setting("python3", "`python3`, `python3.N` or an absolute path", "interpreter for the venvs",
                          _match(PYTHON_RE, "must be python3, python3.N or an absolute path"))
    celery: bool = setting(False, "true or false", "install and restart a celery worker unit", _bool)
    celery_stop_timeout: int = setting(120, "1-3600", "seconds a stopping worker gets to finish its running tasks (warm "
                                       "shutdown) before systemd kills it; a release never waits for it", _int(1, 3600))
    celery_beat: bool = setting(False, "true or false", "also run celery beat (periodic tasks) beside the worker; needs `celery`", _bool)
    celery_app: str = setting("", "a dotted Python module path", "the celery app (`celery --app`)",
                              lambda key, value: validate_identifier(key, value, dotted=True), default_text="the project module")
    tls: str = setting("auto", "`auto`, `internal` or `off`",
                       "`auto` (Caddy's automatic HTTPS), `internal` (Caddy's internal CA), `off` (plain HTTP)", _choice("auto", "internal", "off"))
    tls_email: str = setting("", "an e-mail address", "the ACME account e-mail for `tls: auto`",
                             _optional(_match(EMAIL_RE, "must be an e-mail address")))
    acme_ca: str = setting("", "an `https://` ACME directory URL", "the ACME server for `tls: auto` (Let's Encrypt staging: "
                           "`https://acme-staging-v02.api.letsencrypt.org/directory`)", default_text="Caddy's default CAs",
                           check=_optional(_match(ACME_URL_RE, "must be an https:// ACME directory URL")))
    acme_ca_root: str = setting("", "one PEM certificate", "the root certificate Caddy trusts for `acme_ca`'s own HTTPS (a private or test ACME "
                                "server such as Pebble); only for that server", _pem, default_text="the system's roots")
    redirects: dict[str, str] = setting({}, "DNS names mapping to one of `domains`", "domains that answer with a permanent redirect to one "
                                        "of the site's domains, path and query kept (`www.example.com: example.com`)", _redirects)
    authorized_keys: tuple[str, ...] = setting([], "OpenSSH public key lines", "the deploy user's keys (exactly these when set)",
                                               _each(_match(KEY_RE, "each must be one OpenSSH public key line")))
    adopt_existing: bool = setting(False, "true or false", "let provision take over what it did not make: a Unix account (deploy_user), "
                                   "a PostgreSQL role, a site set up by hand the runbook's way (see the runbook's Taking over a site); "
                                   "without it, provision refuses them", _bool)
    db_name: str = setting("", "a PostgreSQL name: a-z, 0-9, `_`", "the site's database (a site taken over keeps its own, "
                           "such as the runbook's `sum_site_db`)", _optional(_pg_name), default_text="the site slug, `-` as `_`")
    db_user: str = setting("", "a PostgreSQL name: a-z, 0-9, `_`", "the role that owns the database and the app logs in as",
                           _optional(_pg_name), default_text="`db_name`")
    deploy_user_sudo: bool = setting(False, "true or false", "put the deploy user in the `sudo` group", _bool)
    ssh_hardening: bool = setting(False, "true or false", "keys-only sshd (see provision)", _bool)
    apt_packages: tuple[str, ...] = setting([], "Debian/Ubuntu package names", "extra system packages the site needs (libmagic1, ...), installed by provision",
                                            _each(_match(PACKAGE_RE, "each must be a Debian package name (a-z, 0-9, '.', '+', '-')")))
    caddy_source: str = setting("auto", "`auto`, `distro` or `official`",
                                "where Caddy comes from: the distribution, Caddy's apt repository, or `auto`", _choice("auto", "distro", "official"))
    redis_maxmemory: str = setting("64mb", "a size: a number and `kb`, `mb` or `gb`",
                                   "the memory cap of the site's own Redis; keys with an expiry go first when it is full",
                                   _match(SIZE_RE, "must be a size such as 64mb"))
    gunicorn_workers: int = setting(2, "1-64", "gunicorn workers per colour", _int(1, 64))
    standby_minutes: int = setting(0, "0-10080", "minutes the release before keeps running as the warm standby after a switch; "
                                   "past that a timer stops it to free its memory, and a rollback starts it cold (0: it always runs)",
                                   _int(0, 10080))
    keep_releases: int = setting(5, "2-100", "release directories kept", _int(2, 100))
    health_timeout: int = setting(30, "1-600", "seconds a new release has to answer `/health/`", _int(1, 600))
    strict_pins: bool = setting(False, "true or false", "refuse git requirements that follow a branch", _bool)
    backups: Backups = setting(Backups(), "", "the site's database backups", lambda key, value: value)
    alerts: Alerts = setting(Alerts(), "", "where failures are reported", lambda key, value: value)
    offsite: Offsite = setting(Offsite(), "", "copies of the backups off the host", lambda key, value: value)
    schedule: dict[str, Scheduled] = setting({}, "names mapping to `{command, when}`: a management command and a systemd "
                                             "`OnCalendar` expression", "management commands systemd runs on a schedule, in the live "
                                             "release as the app's user (see the runbook's Schedules)", _schedule)
    hooks: dict[str, tuple[str, ...]] = setting({point: [] for point in HOOK_POINTS}, f"one of {', '.join(HOOK_POINTS)}: one-line shell commands",
                                                "shell commands run on the host at named points (see the runbook's Hooks)", _hooks)

    @property
    def primary_domain(self) -> str:
        return self.domains[0]

    @cached_property
    def paths(self) -> HostMap:
        """Every path, unit and root command of this site on a host."""
        return HostMap(self)


# ---------------------------------------------------------------- generated from the table


def _default(f: dataclasses.Field) -> Any:
    value = copy.deepcopy(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    if dataclasses.is_dataclass(value):
        return {g.name: _default(g) for g in dataclasses.fields(type(value))}
    return value


def defaults() -> dict[str, Any]:
    """The ``sum`` defaults for Invoke's config: every key with a typed default (env vars need one)."""
    return {f.name: _default(f) for f in dataclasses.fields(Site)}


def plain(data: Any) -> Any:
    """Invoke's DataProxy trees as plain dicts and lists."""
    if hasattr(data, "keys") and not isinstance(data, (str, bytes)):
        return {k: plain(data[k]) for k in data.keys()}  # noqa: SIM118 (DataProxy has keys(), no iteration)
    if isinstance(data, (list, tuple)):
        return [plain(v) for v in data]
    return data


def reject_unknown(given: Mapping[str, Any], known: Any, prefix: str = "") -> None:
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ConfigError(f"{prefix}{key}", f"unknown setting{hint}")


def _load(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    reject_unknown(data, [f.name for f in dataclasses.fields(cls)], prefix)
    values = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        raw = data.get(f.name, _default(f))
        if f.metadata["required"] and not raw:
            raise ConfigError(key, "is required")
        if isinstance(_default(f), dict) and dataclasses.is_dataclass(f.default_factory()):
            values[f.name] = _load(type(f.default_factory()), raw or {}, f"{key}.")
        else:
            values[f.name] = f.metadata["check"](key, raw)
    return cls(**values)


def load_site(raw: Any) -> Site:
    """Validate the ``sum`` config tree (a mapping) into a `Site`, or raise `ConfigError`."""
    data = dict(plain(raw) or {})
    if data.get("celery_beat") and not data.get("celery"):
        raise ConfigError("celery_beat", "needs celery: true (beat only sends tasks; the worker runs them)")
    if not data.get("celery_app"):
        data["celery_app"] = data.get("project_module", "")
    if not data.get("db_name"):
        data["db_name"] = str(data.get("site_slug") or "").replace("-", "_")
    if not data.get("db_user"):
        data["db_user"] = data["db_name"]
    site = _load(Site, data)
    for source, target in site.redirects.items():
        if source in site.domains:
            raise ConfigError(f"redirects.{source}", "is one of sum.domains: a domain either serves the site or redirects, not both")
        if target not in site.domains:
            raise ConfigError(f"redirects.{source}", f"must redirect to one of sum.domains ({', '.join(site.domains)})", target)
    if (site.acme_ca or site.acme_ca_root) and site.tls != "auto":
        raise ConfigError("acme_ca" if site.acme_ca else "acme_ca_root", f"only applies to tls: auto (tls is {site.tls})")
    check_offsite(site.offsite)
    if site.acme_ca_root and not site.acme_ca:
        raise ConfigError("acme_ca_root", "needs sum.acme_ca: it is the root of that server's own certificate")
    return site


def check_offsite(offsite: Offsite) -> None:
    """What `sum.offsite`'s keys need of each other."""
    if offsite.target and offsite.repository:
        raise ConfigError("offsite.repository", "and offsite.target exclude each other: set one (target: the SSH backup machine; "
                          "repository: any other restic repository)")
    if offsite.ssh_login and not offsite.host_key:
        which = "offsite.target" if offsite.target else "an sftp: offsite.repository"
        raise ConfigError("offsite.host_key", f"is required with {which} (`ssh-keyscan -t ed25519 <host>`, checked against its console)")
    if offsite.host_key and offsite.repository and not offsite.ssh_login:
        raise ConfigError("offsite.host_key", "only applies to offsite.target or an sftp: offsite.repository")
    if offsite.env_file and offsite.target:
        raise ConfigError("offsite.env_file", "only applies to offsite.repository (offsite.target is reached with the site's SSH key)")


def reference() -> str:
    """The configuration reference (``docs/configuration.md``), generated from the table."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from sum_tasks/configuration/settings.py by `python3 -m sum_tasks.docs`; a unit test fails when they differ. -->",
        "",
        "Everything lives under `sum` in the client's `fabric.yaml` (or `FABRIC_SUM_*` environment variables, or `-f`",
        "files: Invoke's usual layering). Unknown keys are refused with a did-you-mean, and every value is validated",
        "before anything runs remotely: a bad value gives one line naming the key and the rule, and exit status 2.",
        "",
        "| key | default | rule | meaning |",
        "| --- | --- | --- | --- |",
    ]

    def rows(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            default = _default(f)
            if isinstance(default, dict) and dataclasses.is_dataclass(f.default_factory()):
                rows(type(f.default_factory()), f"{prefix}{f.name}.")
                continue
            shown = "required" if f.metadata["required"] else f.metadata["default_text"] or f"`{json.dumps(default)}`"
            if f.name == "hooks":
                shown = "`{}` (no commands)"
            lines.append(f"| `{prefix}{f.name}` | {shown} | {f.metadata['rule']} | {f.metadata['help']} |")

    rows(Site, "")
    return "\n".join(lines) + "\n"
