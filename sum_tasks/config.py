"""The ``sum`` configuration: typed defaults, and validation before anything runs remotely."""

from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from invoke.exceptions import Exit

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOST_RE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
PYTHON_RE = re.compile(r"^(?:python3(?:\.\d{1,2})?|/[A-Za-z0-9._/-]+)$")
KEY_RE = re.compile(r"^(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}(?: [^\n\r]*)?$")
REPO_RE = re.compile(r"^(?:(?:https?|ssh|git|file)://\S+|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:\S+|/\S+)$")
ONCALENDAR_RE = re.compile(r"^[A-Za-z0-9*:/.,~ -]{1,64}$")

RESERVED_USERS = ("root", "postgres", "caddy", "www-data", "redis", "nobody", "daemon", "bin", "sys", "sshd", "systemd-journal")
RESERVED_DATABASES = ("postgres", "template0", "template1")
TLS_MODES = ("auto", "internal", "off")
HOOK_POINTS = ("before_migrate", "before_switch", "after_switch", "after_failure", "after_restore")
CADDY_SOURCES = ("auto", "distro", "official")
BACKUP_FORMATS = ("gzip", "zstd")
# gunicorn instances per site: the live one, the warm standby (the release before), and one a release starts.
COLOURS = ("blue", "green", "amber")

DEFAULTS: dict[str, Any] = {
    "site_slug": "",
    "domains": [],
    "project_module": "",
    "repo_url": "",
    "deploy_user": "deploy",
    "admin_user": "root",
    "hosts": [],
    "python": "python3",
    "celery": False,
    "celery_app": "",
    "tls": "auto",
    "tls_email": "",
    "authorized_keys": [],
    "deploy_user_sudo": False,
    "ssh_hardening": False,
    "caddy_source": "auto",
    "gunicorn_workers": 2,
    "keep_releases": 5,
    "health_timeout": 30,
    "strict_pins": False,
    "backups": {"keep": 14, "format": "gzip", "schedule": "*-*-* 03:15:00"},
    "hooks": {point: [] for point in HOOK_POINTS},
}


class ConfigError(Exit):
    """A one-line configuration error; fab prints it and exits non-zero."""

    def __init__(self, key: str, rule: str, value: Any = None) -> None:
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"sum.{key}: {rule}{shown}", code=2)


@dataclass(frozen=True)
class Backups:
    keep: int
    format: str
    schedule: str


@dataclass(frozen=True)
class Site:
    """One validated site: everything the tasks need to know, nothing remote."""

    site_slug: str
    domains: tuple[str, ...]
    project_module: str
    repo_url: str
    deploy_user: str
    admin_user: str
    hosts: tuple[str, ...]
    python: str
    celery: bool
    celery_app: str
    tls: str
    tls_email: str
    authorized_keys: tuple[str, ...]
    deploy_user_sudo: bool
    ssh_hardening: bool
    caddy_source: str
    gunicorn_workers: int
    keep_releases: int
    health_timeout: int
    strict_pins: bool
    backups: Backups
    hooks: dict[str, tuple[str, ...]]

    @property
    def root(self) -> str:
        return f"/srv/sum/{self.site_slug}"

    @property
    def primary_domain(self) -> str:
        return self.domains[0]

    @property
    def unit_prefix(self) -> str:
        return f"sum-{self.site_slug}"

    @property
    def db_name(self) -> str:
        return self.site_slug.replace("-", "_")

    @property
    def run_dir(self) -> str:
        return f"/run/sum/{self.site_slug}"

    @property
    def log_dir(self) -> str:
        return f"/var/log/sum/{self.site_slug}"


def plain(data: Any) -> Any:
    """Invoke's DataProxy trees as plain dicts and lists."""
    if hasattr(data, "keys") and not isinstance(data, (str, bytes)):
        return {k: plain(data[k]) for k in data.keys()}  # noqa: SIM118 (DataProxy has keys(), no iteration)
    if isinstance(data, (list, tuple)):
        return [plain(v) for v in data]
    return data


def _reject_unknown(given: Mapping[str, Any], known: Mapping[str, Any], prefix: str = "") -> None:
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ConfigError(f"{prefix}{key}", f"unknown setting{hint}")


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ConfigError(key, "must be true or false", value)


def _int(key: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a whole number from {low} to {high}", value) from None
    if isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(key, f"must be a whole number from {low} to {high}", value)
    return number


def _list(key: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, "must be a list", value)
    return list(value)


def _match(key: str, value: Any, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(key, rule, value)
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(key, f"must be one of {', '.join(choices)}", value)
    return value


def validate_slug(value: Any, key: str = "site_slug") -> str:
    return _match(key, value, SLUG_RE, "must be 1-63 of a-z, 0-9 and '-', starting with a letter or digit")


def validate_domain(value: Any, key: str = "domains") -> str:
    rule = "each must be a lowercase DNS name such as example.com"
    if not isinstance(value, str) or len(value) > 253 or value.endswith("."):
        raise ConfigError(key, rule, value)
    labels = value.split(".")
    if len(labels) < 2 or not all(LABEL_RE.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ConfigError(key, rule, value)
    return value


def validate_identifier(key: str, value: Any, dotted: bool = False) -> str:
    parts = value.split(".") if isinstance(value, str) and dotted else [value]
    if not all(isinstance(p, str) and p.isidentifier() and p.isascii() and not keyword.iskeyword(p) for p in parts):
        what = "a dotted Python module path" if dotted else "a Python identifier"
        raise ConfigError(key, f"must be {what}", value)
    return value


def load_site(raw: Any) -> Site:
    """Validate the ``sum`` config tree (a mapping) into a `Site`, or raise `ConfigError`."""
    data = plain(raw) or {}
    _reject_unknown(data, DEFAULTS)
    merged = {**DEFAULTS, **data}
    backups = {**DEFAULTS["backups"], **(merged["backups"] or {})}
    _reject_unknown(backups, DEFAULTS["backups"], "backups.")

    if not merged["site_slug"]:
        raise ConfigError("site_slug", "is required")
    slug = validate_slug(merged["site_slug"])
    if slug.replace("-", "_") in RESERVED_DATABASES or slug.startswith("pg-"):
        raise ConfigError("site_slug", "names a PostgreSQL system role or database; choose another", slug)
    domains = _list("domains", merged["domains"])
    if not domains:
        raise ConfigError("domains", "needs at least one domain; the first is the primary")
    for domain in domains:
        validate_domain(domain)
    if len(set(domains)) != len(domains):
        raise ConfigError("domains", "must not repeat a domain", domains)
    if not merged["project_module"]:
        raise ConfigError("project_module", "is required")
    module = validate_identifier("project_module", merged["project_module"])
    repo_url = merged["repo_url"]
    if repo_url:
        _match("repo_url", repo_url, REPO_RE, "must be a git URL (https://, ssh://, file://, user@host:path) or an absolute path")
        if re.search(r"://[^/@]*:[^/@]*@", repo_url):
            raise ConfigError("repo_url", "must not hold a password or token (it would show in process lists): give the server a deploy key")
    user_rule = "must be a Unix user name (a-z, 0-9, '_', '-', at most 32)"
    if merged["deploy_user"] in RESERVED_USERS:
        raise ConfigError("deploy_user", "must not be a system account (the app runs as this user)", merged["deploy_user"])
    hosts = _list("hosts", merged["hosts"])
    for host in hosts:
        _match("hosts", host, HOST_RE, "each must be [user@]host[:port]")
    keys = _list("authorized_keys", merged["authorized_keys"])
    for key in keys:
        _match("authorized_keys", key, KEY_RE, "each must be one OpenSSH public key line")
    celery_app = merged["celery_app"] or module
    validate_identifier("celery_app", celery_app, dotted=True)
    hooks = {**DEFAULTS["hooks"], **(merged["hooks"] or {})}
    _reject_unknown(hooks, DEFAULTS["hooks"], "hooks.")
    hooks = {point: [commands] if isinstance(commands, str) else _list(f"hooks.{point}", commands) for point, commands in hooks.items()}
    for point, commands in hooks.items():
        for command in commands:
            if not isinstance(command, str) or not command.strip() or "\n" in command:
                raise ConfigError(f"hooks.{point}", "each must be a one-line shell command", command)
    tls_email = merged["tls_email"]
    if tls_email and not re.fullmatch(r"^[^@\s'\"{}]+@[^@\s'\"{}]+$", tls_email):
        raise ConfigError("tls_email", "must be an e-mail address", tls_email)

    return Site(
        site_slug=slug,
        domains=tuple(domains),
        project_module=module,
        repo_url=repo_url,
        deploy_user=_match("deploy_user", merged["deploy_user"], USER_RE, user_rule),
        admin_user=_match("admin_user", merged["admin_user"], USER_RE, user_rule),
        hosts=tuple(hosts),
        python=_match("python", merged["python"], PYTHON_RE, "must be python3, python3.N or an absolute path"),
        celery=_bool("celery", merged["celery"]),
        celery_app=celery_app,
        tls=_choice("tls", merged["tls"], TLS_MODES),
        tls_email=tls_email,
        authorized_keys=tuple(keys),
        deploy_user_sudo=_bool("deploy_user_sudo", merged["deploy_user_sudo"]),
        ssh_hardening=_bool("ssh_hardening", merged["ssh_hardening"]),
        caddy_source=_choice("caddy_source", merged["caddy_source"], CADDY_SOURCES),
        gunicorn_workers=_int("gunicorn_workers", merged["gunicorn_workers"], 1, 64),
        keep_releases=_int("keep_releases", merged["keep_releases"], 2, 100),
        health_timeout=_int("health_timeout", merged["health_timeout"], 1, 600),
        strict_pins=_bool("strict_pins", merged["strict_pins"]),
        backups=Backups(
            keep=_int("backups.keep", backups["keep"], 1, 10000),
            format=_choice("backups.format", backups["format"], BACKUP_FORMATS),
            schedule=_match("backups.schedule", backups["schedule"], ONCALENDAR_RE, "must be a systemd OnCalendar expression"),
        ),
        hooks={point: tuple(commands) for point, commands in hooks.items()},
    )
