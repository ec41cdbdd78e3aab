"""The site's own place on the host: its directories (from the host map), its ``.env``, a venv-capable Python, live.sock."""

from __future__ import annotations

from collections.abc import Callable

from ..commands import envfile
from ..commands.credentials import new_secret
from ..commands.facts import Facts
from ..commands.script import q
from ..commands.templating import render
from ..configuration import COLOURS, Site
from ..configuration.hostmap import WEB_GROUP
from .base import Op, dirs_op, file_op

MEDIA_OPTIONS = "nosymfollow,nodev,nosuid,noexec"
CADDY_PID = "systemctl show -p MainPID --value caddy.service"
# Gives everything under a media tree to the app and Caddy's group (directories setgid, files group-readable), through
# directory descriptors: a link the app planted is changed itself, never followed, whatever it swaps in meanwhile.
MEDIA_OWNER = """\
import grp, os, pwd, stat, sys
uid, gid = pwd.getpwnam(sys.argv[1]).pw_uid, grp.getgrnam(sys.argv[2]).gr_gid
for _, _, files, dirfd in os.fwalk(sys.argv[3], follow_symlinks=False):
    os.chown(dirfd, uid, gid)
    os.chmod(dirfd, stat.S_IMODE(os.fstat(dirfd).st_mode) | 0o2050)
    for name in files:
        try:
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dirfd)
        except OSError:
            continue
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode):
                os.chmod(fd, (stat.S_IMODE(mode) & 0o777) | 0o040)
        finally:
            os.close(fd)
"""


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


def media_ops(site: Site, project_dir: str = "") -> list[Op]:
    """Media belongs to the app and Caddy's group, and is mounted on itself with nosymfollow (see the mount unit)."""
    paths, app = site.paths, site.paths.app_user
    mount, media = q(paths.media_mount), q(paths.media)

    def nosymfollow(task: str) -> str:
        return f"findmnt {task}-n -o OPTIONS --target {media} | tr , '\\n' | grep -qx nosymfollow"

    in_caddy = nosymfollow('-N "$pid" ')

    foreign = f"find {media} -xdev \\( ! -user {q(app)} -o ! -group {WEB_GROUP} -o -type d ! -perm -2050 \\) -print -quit"
    return [
        Op("media owned by the app, readable by caddy", f"[ -z \"$({foreign})\" ]",
           f"python3 -c {q(MEDIA_OWNER)} {q(app)} {WEB_GROUP} {media}"),
        file_op("media mount unit", paths.unit_file(paths.media_mount), render("media.mount.j2", {"site": site, "options": MEDIA_OPTIONS}, project_dir),
                then="systemctl daemon-reload"),
        # A mount made while Caddy runs reaches Caddy's own mount namespace (PrivateTmp) without its flags: set them there too.
        Op("media mounted without symlinks, for caddy too",
           f"systemctl is-enabled -q {mount} && {nosymfollow('')} && pid=$({CADDY_PID}) && "
           f"{{ [ \"$pid\" = 0 ] || {in_caddy}; }}",
           f"systemctl enable --now {mount} && pid=$({CADDY_PID}) && if [ \"$pid\" != 0 ]; then "
           f"nsenter -t \"$pid\" -m mount -o remount,bind,{MEDIA_OPTIONS} {media}; fi"),
    ]


def site_env(site: Site, facts: Facts, secret: Callable[[], str] = new_secret) -> str:
    """The .env the site should have, from the one the host has (generated secrets are made once, then kept)."""
    return envfile.merge(facts.env_text, site, secret, facts.pg_port)


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
