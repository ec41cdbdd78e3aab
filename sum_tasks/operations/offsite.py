"""Off-site copies: restic, the site's SSH key for the backup machine, its host key, the password, the script, its unit,
and the timer that rehearses a restore from them."""

from __future__ import annotations

from ..commands.offsite import known_hosts_line, script_context
from ..commands.script import q
from ..commands.templating import render
from ..configuration import Site
from .base import Op, absent_op, enabled_op, file_op
from .units import DAEMON_RELOAD


def offsite_ops(site: Site, password: str, project_dir: str = "", credentials: str = "") -> list[Op]:
    """With `sum.offsite` (a target or a repository), everything the copy and its rehearsal need; without, none of it (the
    operator keeps the password; the last rehearsal's status line stays, unread). `credentials` is the host's copy of
    `sum.offsite.env_file` (`commands.offsite.host_env`)."""
    paths, user = site.paths, site.deploy_user
    key, timer = paths.offsite_key, paths.offsite_rehearse_timer
    ssh_files = [paths.offsite_known_hosts, key, f"{key}.pub"]
    if not site.offsite.enabled:
        return [absent_op("no off-site copy", [paths.offsite_script, paths.unit_file(paths.offsite_service),
                                               paths.unit_file(paths.offsite_rehearse),
                                               paths.unit_file(timer), paths.restic_password, paths.offsite_env, *ssh_files],
                          before=f"systemctl disable --now {q(timer)} 2>/dev/null || true", then=DAEMON_RELOAD)]
    ctx = script_context(site)
    if site.offsite.ssh_login:
        ssh = [
            Op(
                "off-site ssh key", f'[ "$(stat -c "%a %U %G" {q(key)} 2>/dev/null)" = "640 root {user}" ] && [ -s {q(key + ".pub")} ]',
                f"[ -s {q(key)} ] || ssh-keygen -q -t ed25519 -N '' -C {q(f'sum-{site.site_slug} off-site')} -f {q(key)}\n"
                f"chown root:{q(user)} {q(key)} && chmod 640 {q(key)}",
            ),
            file_op("off-site host key", paths.offsite_known_hosts, known_hosts_line(site)),
        ]
    else:
        ssh = [absent_op("no off-site ssh key (the repository is not reached over SSH)", ssh_files)]
    if credentials:
        env = file_op("off-site credentials", paths.offsite_env, credentials, 0o640, group=user)
    else:
        env = absent_op("no off-site credentials file", [paths.offsite_env])
    return [
        *ssh,
        file_op("off-site password", paths.restic_password, password, 0o640, group=user),
        env,
        file_op("off-site script", paths.offsite_script, render("offsite.sh.j2", ctx, project_dir), 0o755),
        file_op("off-site unit", paths.unit_file(paths.offsite_service), render("offsite.service.j2", ctx, project_dir), then=DAEMON_RELOAD),
        file_op("off-site rehearsal unit", paths.unit_file(paths.offsite_rehearse),
                render("offsite-rehearse.service.j2", ctx, project_dir), then=DAEMON_RELOAD),
        file_op("off-site rehearsal timer", paths.unit_file(timer), render("offsite-rehearse.timer.j2", ctx, project_dir),
                then=f"{DAEMON_RELOAD} && systemctl try-restart {q(timer)}"),
        enabled_op("off-site rehearsal timer", timer),
    ]
