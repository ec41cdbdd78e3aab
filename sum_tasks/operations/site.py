"""The site's own place on the host: its directories (from the host map), its ``.env``, a venv-capable Python, live.sock."""

from __future__ import annotations

from collections.abc import Callable

from ..commands import envfile
from ..commands.credentials import new_secret
from ..commands.facts import Facts
from ..commands.script import q
from ..configuration import COLOURS, Site
from .base import Op, dirs_op, file_op


def directory_ops(site: Site) -> list[Op]:
    user = site.deploy_user
    return [
        dirs_op("site directories", [(e.path, e.mode, e.owner, e.group) for e in site.paths.directories()]),
        Op(
            f"{site.python} can build venvs",
            f"runuser -u {q(user)} -- {q(site.python)} -c 'import venv, ensurepip'",
            "", verify_only=True, hint=f"install the venv package for {site.python} (python3-venv)",
        ),
    ]


def site_env(site: Site, facts: Facts, secret: Callable[[], str] = new_secret) -> str:
    """The .env the site should have, from the one the host has (generated secrets are made once, then kept)."""
    return envfile.merge(facts.env_text, site, secret, facts.pg_port, set(facts.redis_taken))


def env_ops(site: Site, env_text: str) -> list[Op]:
    return [file_op(".env", site.paths.env, env_text, 0o600, site.deploy_user, site.deploy_user)]


def live_socket_op(site: Site) -> Op:
    """Caddy proxies to `live.sock`: a site released before it existed gets it, naming the colour that runs `current`."""
    paths = site.paths
    root, link = q(paths.root), q(paths.live_socket)
    return Op(
        "live.sock names the live colour",
        f"[ -L {link} ] || [ ! -L {q(paths.current)} ]",
        f"cd {root} && for c in {' '.join(COLOURS)}; do if [ \"$(readlink \"colours/$c\")\" = \"$(readlink current)\" ]; then "
        f"ln -sfn {q(paths.run_dir)}/\"$c\".sock live.sock.tmp && chown -h {q(site.deploy_user)}: live.sock.tmp && "
        "mv -T live.sock.tmp live.sock && break; fi; done",
        hint="no colour runs the release `current` names: `fab release` repairs it",
    )
