"""The site's ``.env``: parsed, merged with what the config says, written so a shell and systemd can both read it,
and the shell that loads it on the host."""

from __future__ import annotations

import re
from collections.abc import Callable

from ..configuration import Site
from .credentials import new_secret
from .script import Script, q

LINE_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9_./:@,+=%-]*$")
GENERATED = ("DJANGO_SECRET_KEY", "DJANGO_DB_PASSWORD")
HEADER = "# Managed by sum_tasks: keys from fabric.yaml are kept in sync; secrets and keys you add are kept.\n"


def parse(text: str) -> dict[str, str]:
    """KEY=value pairs of an env file; quotes around a value are removed."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = LINE_RE.match(line)
        if not match:
            continue
        key, value = match.groups()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def format_value(value: str) -> str:
    if SAFE_VALUE_RE.match(value):
        return value
    if "'" in value or "\n" in value:
        raise ValueError("values with a single quote or a newline cannot go in .env")
    return f"'{value}'"


def synced(site: Site, db_port: int = 5432) -> dict[str, str]:
    """Keys whose values follow fabric.yaml (and the port PostgreSQL listens on)."""
    return {
        "DJANGO_SETTINGS_MODULE": f"{site.project_module}.settings.production",
        "ALLOWED_HOSTS": ",".join(site.domains),
        "DJANGO_DB_NAME": site.db_name,
        "DJANGO_DB_USER": site.db_user,
        "DJANGO_DB_HOST": "127.0.0.1",
        "DJANGO_DB_PORT": str(db_port),
        "DJANGO_STATIC_ROOT": site.paths.static,
        "DJANGO_MEDIA_ROOT": site.paths.media,
        "SITE_DOMAIN": site.primary_domain,
        "WAGTAILADMIN_BASE_URL": f"{'http' if site.tls == 'off' else 'https'}://{site.primary_domain}",
    }


REDIS_KEYS = ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
# The host-wide Redis every site shared before each got its own: a URL naming it is replaced.
SHARED_REDIS_RE = re.compile(r"^['\"]?redis://(localhost|127\.0\.0\.1)(:6379)?/\d+['\"]?$")


def redis_urls(site: Site) -> dict[str, str]:
    """The site's own Redis: the cache in database 0, Celery's broker in 1 and its results in 2, all on its unix socket."""
    socket = site.paths.redis_socket
    return {"REDIS_URL": f"unix://{socket}?db=0", "CELERY_BROKER_URL": f"redis+socket://{socket}?virtual_host=1",
            "CELERY_RESULT_BACKEND": f"redis+socket://{socket}?virtual_host=2"}


def uses_shared_redis(url: str) -> bool:
    return bool(SHARED_REDIS_RE.match(url.strip()))


def merge(existing: str, site: Site, secret: Callable[[], str] = new_secret, db_port: int = 5432) -> str:
    """The .env the site should have, given the one it has.

    Keys from fabric.yaml take the config's value; generated secrets are created once and then
    kept; the Redis URLs name the site's own Redis when missing or naming the host-wide one (an
    operator's own Redis elsewhere is kept);
    every other line the operator wrote stays as it is.
    """
    current = parse(existing)
    wanted = dict(synced(site, db_port))
    for key in GENERATED:
        wanted[key] = current.get(key) or secret()
    for key, url in redis_urls(site).items():
        have = current.get(key, "")
        wanted[key] = url if not have or uses_shared_redis(have) else have
    lines = [HEADER]
    lines += [f"{key}={format_value(value)}\n" for key, value in wanted.items()]
    others = [line for line in existing.splitlines() if line.strip() and not line.startswith(HEADER.strip())]
    for line in others:
        match = LINE_RE.match(line)
        if match and match.group(1) in wanted:
            continue
        lines.append(line + "\n")
    return "".join(lines)


def in_site_env(site: Site, directory: str) -> str:
    """Shell that enters `directory` and exports the site's .env (and the release's .release.env when there is one)."""
    return (f"cd {q(directory)} && set -a && . {q(site.paths.env)} && "
            "if [ -f .release.env ]; then . ./.release.env; fi && set +a")


def site_psql(site: Site, sql: str) -> str:
    """Shell running `sql` as the site's role with the password from .env (in the environment, never in argv); tuples only."""
    return (
        f"(set -a; . {q(site.paths.env)}; set +a; export PGPASSWORD=\"$DJANGO_DB_PASSWORD\" PGCONNECT_TIMEOUT=5; "
        'psql -XtAq -h "$DJANGO_DB_HOST" -p "$DJANGO_DB_PORT" -U "$DJANGO_DB_USER" -d "$DJANGO_DB_NAME" '
        f"-c {q(sql)})"
    )


def edit(text: str, changes: dict[str, str | None]) -> tuple[str, dict[str, str]]:
    """The file with each key set to its value (None: removed), and what happened to each key.

    A key keeps its place (its first line; later duplicates go), a new key goes last; every
    other line stays as it is. Outcomes: added, changed, removed, unchanged, not set.
    """
    current = parse(text)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    outcomes: dict[str, str] = {}
    for key, value in changes.items():
        if value is None:
            outcomes[key] = "removed" if key in current else "not set"
        elif key not in current:
            outcomes[key] = "added"
        else:
            outcomes[key] = "unchanged" if current[key] == value else "changed"
        if outcomes[key] not in ("changed", "removed", "added"):
            continue
        new_line = f"{key}={format_value(value)}\n" if value is not None else ""
        kept, placed = [], False
        for line in lines:
            match = LINE_RE.match(line)
            if match and match.group(1) == key:
                if not placed:
                    kept.append(new_line)
                    placed = True
                continue
            kept.append(line)
        if not placed:
            kept.append(new_line)
        lines = kept
    return "".join(lines), outcomes


def hook_script(site: Site, directory: str, point: str, command: str) -> Script:
    """One configured hook command, run in `directory` with the site's environment."""
    return Script(f"hook {point}: {command}", f"{in_site_env(site, directory)} && {command}")


def write_script(site: Site, tmp: str, old_sha: str, as_root: bool) -> Script:
    """Replace .env with `tmp` (mode 0600, the deploy user's) in one rename, unless .env changed since it was read."""
    env, user = q(site.paths.env), q(site.deploy_user)
    return Script("write .env", "\n".join([
        "set -e",
        f'if [ "$(sha256sum < {env} | cut -c1-64)" != {old_sha} ]; then',
        f"  rm -f {q(tmp)}; echo '.env changed on the host while this ran; nothing was written: run it again' >&2; exit 1",
        "fi",
        f"chmod 600 {q(tmp)}",
        f"chown {user}:{user} {q(tmp)}" if as_root else ":",
        f"mv -f {q(tmp)} {env}",
    ]))


def temp_script(site: Site) -> Script:
    """A private temporary file beside .env (its path printed), for the new content to go to."""
    return Script("make a private file beside .env", f"umask 077 && mktemp {q(site.paths.env + '.sum-XXXXXXXX')}")


def remove_script(path: str) -> Script:
    return Script(f"remove {path}", f"rm -f {q(path)}")
