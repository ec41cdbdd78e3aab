"""Provision's whole plan, in order: pure, from the config and the facts read from the host."""

from __future__ import annotations

from collections.abc import Callable

from ..commands import envfile
from ..commands.credentials import add_secret, new_secret
from ..commands.facts import Facts
from ..configuration import Site
from .backups import backup_ops
from .base import Op
from .caddy import caddy_ops
from .firewall import firewall_ops
from .offsite import offsite_ops
from .packages import services_ops
from .postgresql import postgresql_ops, role_refusal
from .redis import site_redis_ops
from .site import directory_ops, env_ops, media_ops, site_env
from .takeover import takeover_ops, takeover_refusal
from .units import unit_ops
from .users import account_refusal, app_user_ops, deploy_user_ops, ssh_hardening_ops


def refusals(site: Site, facts: Facts) -> list[str]:
    """What provision must not take over on this host (accounts and roles it did not make), before it changes anything."""
    return [reason for reason in (account_refusal(site, facts), role_refusal(site, facts), takeover_refusal(site, facts)) if reason]


def host_plan(site: Site, facts: Facts, project_dir: str = "", secret: Callable[[], str] = new_secret,
              offsite_password: str = "", offsite_credentials: str = "") -> list[Op]:
    """Everything after the packages. The .env's generated secrets are registered so no output shows them."""
    env_text = site_env(site, facts, secret)
    values = envfile.parse(env_text)
    for key in envfile.GENERATED:
        add_secret(values[key])
    return [
        *services_ops(),
        *deploy_user_ops(site, project_dir),
        *app_user_ops(site),
        *(ssh_hardening_ops(facts, project_dir) if site.ssh_hardening else []),
        *firewall_ops(facts),
        *directory_ops(site),
        *media_ops(site, project_dir),
        *env_ops(site, env_text),
        *site_redis_ops(site, project_dir),
        *postgresql_ops(site, values["DJANGO_DB_PASSWORD"]),
        *unit_ops(site, project_dir),
        *backup_ops(site, project_dir),
        *offsite_ops(site, offsite_password, project_dir, offsite_credentials),
        *caddy_ops(site, facts, project_dir),
        *takeover_ops(site, facts),
    ]
