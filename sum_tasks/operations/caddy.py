"""Caddy: the main Caddyfile importing the sites, the site's own file; validated before any reload."""

from __future__ import annotations

from ..commands.facts import Facts
from ..commands.templating import render
from ..configuration import Site
from ..configuration.hostmap import CADDY_SITES
from .base import Op, dirs_op, file_op
from .takeover import keeps_hand_caddy, kept_caddy_op

CADDYFILE = "/etc/caddy/Caddyfile"
CADDY_IMPORT = f"import {CADDY_SITES}/*.caddy"
CADDY_VALIDATE = f"runuser -u caddy -- caddy validate --config {CADDYFILE} --adapter caddyfile"
CADDY_RELOAD = "systemctl reload-or-restart caddy"
# The admin API only on a unix socket in a directory only Caddy can enter: no app (no local user) reaches it,
# while `systemctl reload caddy` (run as caddy) still does.
ADMIN_DIR = "/run/caddy"
ADMIN_SOCKET = f"{ADMIN_DIR}/admin.sock"
ADMIN_LINE = f"\tadmin unix/{ADMIN_SOCKET}\n"
ADMIN_TMPFILES = "/etc/tmpfiles.d/sum-caddy-admin.conf"
# The first reload after moving the admin API must reach it where it still is (Caddy's reload reads the new address).
MOVE_ADMIN = f"runuser -u caddy -- caddy reload --config {CADDYFILE} --adapter caddyfile --address localhost:2019"


def main_caddyfile(text: str) -> str:
    """The main Caddyfile with the admin API on `ADMIN_SOCKET` and the sites-enabled import; everything else kept.

    The admin line goes first in the global options block (one is added when there is none, and any other
    ``admin`` setting is replaced); the import goes right after that block.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    meaningful = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    if meaningful and lines[meaningful[0]].strip() == "{":
        start = meaningful[0]
        end = next((i for i in range(start + 1, len(lines)) if lines[i].rstrip() == "}"), len(lines))
        body, depth = [], 0
        for line in lines[start + 1:end]:
            words = line.split()
            if depth or (words and words[0] == "admin"):
                depth += line.count("{") - line.count("}")
                continue
            body.append(line)
        lines[start:end + 1] = ["{\n", ADMIN_LINE, *body, "}\n"]
        end = start + len(body) + 3
    else:
        lines[0:0] = ["{\n", ADMIN_LINE, "}\n", "\n"]
        end = 3
    if not any(line.strip() == CADDY_IMPORT for line in lines):
        lines[end:end] = ["\n", CADDY_IMPORT + "\n"]
    return "".join(lines)


def caddy_ops(site: Site, facts: Facts, project_dir: str = "") -> list[Op]:
    return [
        dirs_op("caddy sites-enabled", [(CADDY_SITES, 0o755, "root", "root")]),
        file_op(
            "caddy admin socket directory", ADMIN_TMPFILES, f"# Managed by sum_tasks: Caddy's admin API socket, for Caddy only.\nd {ADMIN_DIR} 0750 caddy caddy -\n",
            then=f"systemd-tmpfiles --create {ADMIN_TMPFILES}",
        ),
        file_op(
            "caddy main config (admin socket, sites-enabled)", CADDYFILE, main_caddyfile(facts.caddyfile),
            validate_installed=CADDY_VALIDATE, then=f"{CADDY_RELOAD} || {MOVE_ADMIN}",
        ),
        *([file_op("acme server root (sum.acme_ca_root)", site.paths.acme_root, site.acme_ca_root)] if site.acme_ca_root else []),
        kept_caddy_op(site) if keeps_hand_caddy(facts) else file_op(
            "caddy site", site.paths.caddy_site, render("site.caddy.j2", {"site": site}, project_dir),
            validate_installed=CADDY_VALIDATE, then=CADDY_RELOAD, hint="the site config failed `caddy validate`; the previous one is still in place",
        ),
    ]
