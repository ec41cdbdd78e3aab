"""The deploy user: its account, groups, SSH keys, its exact sudoers rule; and keys-only sshd."""

from __future__ import annotations

import re

from ..commands.facts import Facts
from ..commands.script import q
from ..commands.templating import render
from ..configuration import Site
from ..configuration.hostmap import MANAGE_ARGS, WEB_GROUP
from .base import Op, dirs_op, file_op, group_member_op

SSHD_HARDENING = "/etc/ssh/sshd_config.d/01-sum-hardening.conf"
ACCOUNT_MARK = "sum_tasks deploy user"
APP_MARK = "sum_tasks app user"


def account_refusal(site: Site, facts: Facts) -> str:
    """Why provision may not take the deploy user's account over ('' when it may): it exists, and neither sum_tasks
    made it (its comment, or a sum sudoers rule naming it) nor `sum.adopt_existing` says to."""
    ours = facts.deploy_account == ACCOUNT_MARK or facts.deploy_granted
    if facts.deploy_account is None or ours or site.adopt_existing:
        return ""
    return (f"the Unix account {site.deploy_user!r} exists and was not made by sum_tasks: choose another sum.deploy_user, "
            "or set sum.adopt_existing: true to make it this site's deploy user")


def deploy_user_ops(site: Site, project_dir: str = "") -> list[Op]:
    user = site.deploy_user
    ops = [
        Op(
            f"deploy user {user}",
            f"id -u {q(user)} >/dev/null 2>&1 && [ -d /home/{user} ]",
            f"useradd --create-home --shell /bin/bash --user-group --comment {q(ACCOUNT_MARK)} {q(user)}",
        ),
        Op(
            f"{user} marked as made by sum_tasks",
            f"[ \"$(getent passwd {q(user)} | cut -d: -f5)\" = {q(ACCOUNT_MARK)} ]",
            f"usermod --comment {q(ACCOUNT_MARK)} {q(user)}",
        ),
        group_member_op(user, "sudo", site.deploy_user_sudo),
        group_member_op(user, "systemd-journal"),
        # Health probes reach the colours' sockets, and backups read media, through Caddy's group.
        group_member_op(user, WEB_GROUP),
    ]
    if site.authorized_keys:
        home = f"/home/{user}"
        ops += [
            dirs_op(f"{user} .ssh directory", [(f"{home}/.ssh", 0o700, user, user)]),
            file_op(f"{user} authorized keys", f"{home}/.ssh/authorized_keys", "".join(k + "\n" for k in site.authorized_keys), 0o600, user, user),
        ]
    alias = "SUM_" + re.sub(r"[^A-Z0-9]", "_", site.site_slug.upper())
    ops.append(file_op(
        "sudoers rule", site.paths.sudoers,
        render("sudoers.j2", {"site": site, "paths": site.paths, "alias": alias, "commands": site.paths.sudo_commands(),
                              "manage_args": MANAGE_ARGS}, project_dir),
        0o440, validate="visudo -cqf {}",
    ))
    return ops


def app_user_ops(site: Site) -> list[Op]:
    """The site's app user and group: a system account with no home, no shell, no password, in no other group."""
    app = site.paths.app_user
    mark = f"{APP_MARK} {site.site_slug}"
    return [Op(
        f"app user {app}",
        f"[ \"$(getent passwd {q(app)} | cut -d: -f5,6,7)\" = {q(mark + ':/nonexistent:/usr/sbin/nologin')} ] && "
        f"[ \"$(id -nG {q(app)})\" = {q(app)} ]",
        f"if id -u {q(app)} >/dev/null 2>&1; then usermod --comment {q(mark)} --home /nonexistent --shell /usr/sbin/nologin "
        f"--groups '' {q(app)}; else useradd --system --user-group --no-create-home --home-dir /nonexistent "
        f"--shell /usr/sbin/nologin --comment {q(mark)} {q(app)}; fi",
    )]


def ssh_hardening_ops(facts: Facts, project_dir: str = "") -> list[Op]:
    """Keys only; root keeps key logins while the operator connects as root, so nobody is locked out."""
    permit_root = "prohibit-password" if facts.user == "root" else "no"
    return [
        Op(
            f"ssh key present for {facts.user}",
            f"[ -s \"$(getent passwd {q(facts.user)} | cut -d: -f6)/.ssh/authorized_keys\" ]",
            "", verify_only=True,
            hint=f"give {facts.user} an SSH key before turning on sum.ssh_hardening, or you would be locked out",
        ),
        file_op(
            "ssh hardening", SSHD_HARDENING,
            render("sshd-hardening.conf.j2", {"permit_root_login": permit_root}, project_dir),
            validate_installed="sshd -t", then="systemctl reload ssh",
        ),
    ]
