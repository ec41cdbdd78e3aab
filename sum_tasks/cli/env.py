"""env.list, env.set, env.unset, env.restart: edit the site's ``.env`` safely, never printing a value.

Values travel only in the file's content, over SFTP: never in a command line, in output or
in an error message. The new file goes to a private temporary file beside ``.env`` and
replaces it with one rename, mode 0600 and owned by the deploy user, unless ``.env``
changed since it was read. The app reads ``.env`` when it starts; ``--restart`` (or
``env.restart``) starts a free colour with it, waits for ``/health/``, then switches to it,
so a bad value leaves the running colour serving.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import re

from fabric import Connection
from invoke import Collection, Context, task
from invoke.exceptions import Exit

from ..commands import colours as plan
from ..commands import envfile
from ..commands.credentials import add_secret
from ..configuration import Site, load_site
from ..host.output import Report, StepError
from ..host.runner import host_label, run
from ..host.targets import targets
from . import colours
from .lock import site_lock

KEY_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
MASK = "********"
RESTART_HELP = "after a change, restart the app with it: a free colour starts, passes /health/, takes over"


# ---------------------------------------------------------------- arguments (pure)


def validate_key(key: str, task_name: str = "env.set") -> str:
    if key.startswith("-"):
        raise Exit(f"{task_name}: {key!r} is an option where a key belongs; for help run `fab --help {task_name}`", code=2)
    if not KEY_RE.fullmatch(key):
        raise Exit(f"{key!r} is not a valid key: use A-Z, 0-9 and '_', not starting with a digit", code=2)
    return key


def validate_value(key: str, value: str) -> str:
    """One printable line without a single quote (what `envfile.format_value` can write); the error never shows the value."""
    if "\n" in value or "\r" in value:
        raise Exit(f"{key}: the value must be one line", code=2)
    if not value.isprintable():
        raise Exit(f"{key}: the value has a control character", code=2)
    try:
        envfile.format_value(value)
    except ValueError as err:
        raise Exit(f"{key}: {err}", code=2) from None
    return value


def parse_pairs(pairs: list[str], ask=getpass.getpass) -> dict[str, str]:
    """``KEY=VALUE`` arguments as {key: value}; a bare ``KEY`` asks for its value without echoing it."""
    changes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        validate_key(key)
        if key in changes:
            raise Exit(f"{key} is given twice", code=2)
        if not sep:
            try:
                value = ask(f"value for {key} (not shown): ")
            except EOFError:
                raise Exit(f"{key}: no value given", code=2) from None
        changes[key] = validate_value(key, value)
    return changes


def refusal(site: Site, key: str, force: bool) -> str:
    """Why `key` may not be changed or removed here, or an empty string when it may."""
    if key in envfile.GENERATED and not force:
        why = ("signs sessions and tokens: a new one logs every user out" if key == "DJANGO_SECRET_KEY"
               else "is the database role's password: the app cannot connect until `fab provision` sets the new one on the role")
        return f"{key} is a generated secret and {why}; add --force to change it anyway"
    if key in envfile.synced(site):
        return f"{key} follows fabric.yaml and provision rewrites it: change the sum settings in fabric.yaml and run `fab provision`"
    return ""


def check_allowed(site: Site, keys: list[str], force: bool) -> None:
    for key in keys:
        reason = refusal(site, key, force)
        if reason:
            raise Exit(f"refused: {reason}", code=2)




def describe_key(site: Site, key: str, value: str) -> str:
    """A key as `env.list` shows it: the value masked, and where it comes from."""
    if key in envfile.GENERATED:
        origin = "generated secret (--force to change)"
    elif key in envfile.synced(site):
        origin = "from fabric.yaml (provision keeps it in sync)"
    elif key in envfile.REDIS_KEYS:
        origin = "Redis (the site's own database number)"
    else:
        origin = ""
    return f"  {key}={MASK if value else '':<10} {'(empty) ' if not value else ''}{origin}".rstrip()


# ---------------------------------------------------------------- the host




def read_env(c: Connection, site: Site) -> bytes:
    """The site's .env, over SFTP (its values never pass through a command's output)."""
    buffer = io.BytesIO()
    try:
        c.get(site.paths.env, buffer)
    except FileNotFoundError:
        raise StepError(f"{site.paths.env} does not exist", "run `fab provision`") from None
    return buffer.getvalue()




def write_env(c: Connection, site: Site, content: bytes, old: bytes) -> None:
    """Send the new .env to a 0600 temporary file beside it, then rename it into place."""
    tmp = run(c, envfile.temp_script(site)).stdout.strip()
    try:
        c.put(io.BytesIO(content), tmp)
        result = run(c, envfile.write_script(site, tmp, hashlib.sha256(old).hexdigest(), c.user == "root"), check=False)
    except BaseException:
        run(c, envfile.remove_script(tmp), check=False)
        raise
    if not result.ok:
        raise StepError(result.stderr.strip() or f"exit status {result.exited}")


def restart_app(c: Connection, site: Site, report: Report) -> str:
    """Start a free colour on the live release (reading .env afresh), wait for /health/, switch; returns what it did.

    The colour that served is stopped afterwards: it runs the same release with the old .env, no use as a standby.
    """
    with report.step("restart the app (a free colour, health-gated)") as step:
        done, state = colours.clean_up(c, site, colours.read_state(c, site))
        for note in done:
            step.changed(note)
        old = plan.live_colour(state)
        if not state.current or not old:
            step.note("no live release: nothing to restart")
            return "nothing to restart"
        colour, release_dir = plan.free_colour(state), site.paths.release(state.current)
        try:
            colours.start(c, site, colour, release_dir)
        except BaseException as err:
            colours.stop(c, site, colour)
            if isinstance(err, StepError):
                raise StepError(f"the app did not take over with the new .env: {err.reason}",
                                f"{old} still serves with the .env it started with; fix the value and run `fab env.restart`") from None
            raise
        colours.switch(c, site, report, plan.switch_script(site, release_dir, colour, migrations=False))
        run(c, plan.restart_script(site, old))
        step.changed(f"{colour} started with the new .env and healthy, {old} stopping")
    return f"restarted ({colour} live)"


def change_env(c: Connection, site: Site, task_name: str, changes: dict[str, str | None], restart: bool) -> None:
    report = Report(task_name, host_label(c))
    with site_lock(c, site, task_name):
        with report.step("read .env"):
            old = read_env(c, site)
            text = old.decode(errors="surrogateescape")
            for key in envfile.GENERATED:
                add_secret(envfile.parse(text).get(key, ""))
        new, outcomes = envfile.edit(text, changes)
        done = ", ".join(f"{key} {outcome}" for key, outcome in outcomes.items())
        with report.step("write .env") as step:
            if new == text:
                step.note(f"{done}: nothing written")
            else:
                write_env(c, site, new.encode(errors="surrogateescape"), old)
                step.changed(f"{done}; mode 0600, owner {site.deploy_user}")
        if new == text:
            result = "nothing changed" + (": not restarting (`fab env.restart` restarts anyway)" if restart else "")
        elif restart:
            result = restart_app(c, site, report)
        else:
            result = "the app reads .env when it starts: run `fab env.restart` (or add --restart) to pick this up"
    report.print(f"[{report.host}] {task_name}: {done}; {result}")


# ---------------------------------------------------------------- tasks


@task(name="list")
def list_(c: Context) -> None:
    """The keys in the site's .env, values masked, with where each comes from."""
    for conn, site in targets(c):
        report = Report("env.list", host_label(conn))
        with report.step("read .env") as step:
            values = envfile.parse(read_env(conn, site).decode(errors="replace"))
            step.note(f"{len(values)} keys in {site.paths.env}")
        for key, value in values.items():
            report.print(describe_key(site, key, value))


@task(
    name="set",
    iterable=["also"],
    auto_shortflags=False,
    help={
        "pair": "KEY=VALUE; a bare KEY asks for the value without echoing it (keeps it out of shell history)",
        "also": "another KEY=VALUE (or KEY) to set in the same write; repeat as needed",
        "force": "allow changing a generated secret (DJANGO_SECRET_KEY, DJANGO_DB_PASSWORD)",
        "restart": RESTART_HELP,
    },
)
def set_(c: Context, pair: str, also: list[str] | None = None, force: bool = False, restart: bool = False) -> None:
    """Set keys in the site's .env (atomic, mode 0600 kept); setting a key to its current value writes nothing."""
    site = load_site(c.config.get("sum", {}))
    for key in (p.partition("=")[0] for p in [pair, *(also or [])]):
        validate_key(key)
        check_allowed(site, [key], force)
    changes = parse_pairs([pair, *(also or [])])
    for value in changes.values():
        add_secret(value)
    for conn, site in targets(c):
        change_env(conn, site, "env.set", dict(changes), restart)


@task(
    iterable=["also"],
    auto_shortflags=False,
    help={
        "key": "the key to remove",
        "also": "another key to remove in the same write; repeat as needed",
        "force": "allow removing a generated secret (provision then generates a new one)",
        "restart": RESTART_HELP,
    },
)
def unset(c: Context, key: str, also: list[str] | None = None, force: bool = False, restart: bool = False) -> None:
    """Remove keys from the site's .env (atomic, mode 0600 kept); removing a key that is not there writes nothing."""
    site = load_site(c.config.get("sum", {}))
    keys = [validate_key(k, "env.unset") for k in [key, *(also or [])]]
    check_allowed(site, keys, force)
    for conn, site in targets(c):
        change_env(conn, site, "env.unset", dict.fromkeys(keys), restart)


@task(name="restart")
def restart_task(c: Context) -> None:
    """Restart the app so it reads .env again: a free colour starts, passes /health/, then takes over."""
    for conn, site in targets(c):
        report = Report("env.restart", host_label(conn))
        with site_lock(conn, site, "env.restart"):
            result = restart_app(conn, site, report)
        report.print(f"[{report.host}] env.restart: {result}")


env = Collection("env", list_, set_, unset, restart_task)
