"""PostgreSQL: one role and one database per site, the role owning it, closed to every other role."""

from __future__ import annotations

from ..commands.credentials import scram_sha256
from ..commands.envfile import site_psql
from ..commands.facts import Facts
from ..commands.script import q
from ..configuration import Site
from .base import Op


def role_mark(site: Site) -> str:
    return f"sum_tasks: site {site.site_slug}"


def role_refusal(site: Site, facts: Facts) -> str:
    """Why provision may not take the site's PostgreSQL role over ('' when it may): it exists, the site has no .env
    (so sum_tasks never provisioned it), it carries no sum_tasks comment, and `sum.adopt_existing` is off."""
    if facts.db_role is None or facts.db_role == role_mark(site) or facts.env_text or site.adopt_existing:
        return ""
    return (f"the PostgreSQL role {site.db_user!r} exists and was not made by sum_tasks: choose another sum.site_slug (or sum.db_user), "
            "or set sum.adopt_existing: true to make it (and its database) this site's")


def db_sql(site: Site, password: str) -> str:
    """Role and database, the role owning it; the password goes as a SCRAM verifier, never in clear."""
    db, role = site.db_name, site.db_user
    verifier = scram_sha256(password)
    return (
        "\\set ON_ERROR_STOP on\n"
        f"SELECT 'CREATE ROLE \"{role}\" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')\\gexec\n"
        f"ALTER ROLE \"{role}\" WITH LOGIN NOSUPERUSER NOCREATEROLE PASSWORD '{verifier}';\n"
        f"SELECT 'CREATE DATABASE \"{db}\" OWNER \"{role}\"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec\n"
        f"ALTER DATABASE \"{db}\" OWNER TO \"{role}\";\n"
        f"REVOKE CONNECT, TEMPORARY ON DATABASE \"{db}\" FROM PUBLIC;\n"
        f"COMMENT ON ROLE \"{role}\" IS '{role_mark(site)}';\n"
    )


def db_check(site: Site) -> str:
    """As the deploy user, with the password from .env: the role logs in and owns its database."""
    sql = "SELECT pg_get_userbyid(datdba) = current_user FROM pg_database WHERE datname = current_database()"
    return f"# shellcheck disable=SC2016  # the inner sh expands them\nrunuser -u {q(site.deploy_user)} -- sh -c {q(site_psql(site, sql))}"


def postgresql_ops(site: Site, password: str) -> list[Op]:
    return [Op(
        "postgresql role and database",
        db_check(site),
        "runuser -u postgres -- psql -X -q -f -",
        expect=lambda out: out.strip() == "t",
        stdin=db_sql(site, password).encode(),
    )]
