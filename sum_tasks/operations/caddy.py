"""Caddy: in the sockets' group, the main Caddyfile importing the sites, the site's own file; validated before any reload."""

from __future__ import annotations

from ..commands.facts import Facts
from ..commands.templating import render
from ..configuration import Site
from ..configuration.hostmap import CADDY_SITES, WEB_GROUP
from .base import Op, dirs_op, file_op, group_member_op

CADDYFILE = "/etc/caddy/Caddyfile"
CADDY_IMPORT = f"import {CADDY_SITES}/*.caddy"
CADDY_VALIDATE = f"runuser -u caddy -- caddy validate --config {CADDYFILE} --adapter caddyfile"
CADDY_RELOAD = "systemctl reload-or-restart caddy"


def caddyfile_with_import(text: str) -> str:
    """The main Caddyfile with the sites-enabled import, after any global options block."""
    lines = text.splitlines(keepends=True)
    if any(line.strip() == CADDY_IMPORT for line in lines):
        return text
    at = 0
    meaningful = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    if meaningful and lines[meaningful[0]].strip() == "{":
        closing = next((i for i in range(meaningful[0] + 1, len(lines)) if lines[i].rstrip() == "}"), None)
        at = closing + 1 if closing is not None else 0
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.insert(at, CADDY_IMPORT + "\n\n" if at == 0 else "\n" + CADDY_IMPORT + "\n")
    return "".join(lines)


def caddy_ops(site: Site, facts: Facts, project_dir: str = "") -> list[Op]:
    in_group = group_member_op("caddy", WEB_GROUP, then="systemctl restart caddy")
    return [
        Op("caddy in the sockets' group", in_group.check, in_group.apply),
        dirs_op("caddy sites-enabled", [(CADDY_SITES, 0o755, "root", "root")]),
        file_op(
            "caddy imports sites-enabled", CADDYFILE, caddyfile_with_import(facts.caddyfile),
            validate_installed=CADDY_VALIDATE, then=CADDY_RELOAD,
        ),
        file_op(
            "caddy site", site.paths.caddy_site, render("site.caddy.j2", {"site": site}, project_dir),
            validate_installed=CADDY_VALIDATE, then=CADDY_RELOAD, hint="the site config failed `caddy validate`; the previous one is still in place",
        ),
    ]
