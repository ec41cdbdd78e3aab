"""What provision reads from a host before planning: the script that reads it, and the typed `Facts` parsed from it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..configuration import Site
from ..configuration.hostmap import SRV, SYSTEMD
from .envfile import uses_shared_redis
from .script import Script, q, sections

WEB_PORTS = (80, 443)
# The first line of every file sum_tasks writes for a site.
MARKER = "# Managed by sum_tasks"


REDIS_PORT = 6379


def allowed_ports(ssh_ports: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(ssh_ports) | set(WEB_PORTS)))


UFW_COMMENT = "sum_tasks"


def ufw_rules(status: str) -> dict[str, bool]:
    """The rules `ufw status verbose` shows allowing traffic in: {rule: made by sum_tasks (its comment)}."""
    rules: dict[str, bool] = {}
    for line in status.splitlines():
        match = re.match(r"^(\S+?)(?: \(v6\))?\s+ALLOW IN\s+", line)
        if match:
            rules[match.group(1)] = rules.get(match.group(1), False) or line.rstrip().endswith(f"# {UFW_COMMENT}")
    return rules


def ufw_converged(status: str, ports: tuple[int, ...]) -> bool:
    """`ufw status verbose` shows it active, denying incoming, allowing these TCP ports, and no other rule of sum_tasks'
    own (a rule an operator added is theirs: left alone)."""
    if "Status: active" not in status or "deny (incoming)" not in status:
        return False
    rules, wanted = ufw_rules(status), {f"{p}/tcp" for p in ports}
    return wanted <= set(rules) and not {rule for rule, ours in rules.items() if ours} - wanted


def ufw_others(status: str, ports: tuple[int, ...]) -> list[str]:
    """Rules allowing traffic in that sum_tasks neither made nor wants: an operator's, left alone."""
    wanted = {f"{p}/tcp" for p in ports}
    return sorted((rule for rule, ours in ufw_rules(status).items() if rule not in wanted and not ours), key=lambda r: (len(r), r))


def loopback_only(ss_output: str) -> bool:
    """Every listening address in `ss -Hltn` output is loopback (and there is at least one)."""
    addresses = [line.split()[3].rsplit(":", 1)[0] for line in ss_output.splitlines() if line.strip()]
    return bool(addresses) and all(a in ("127.0.0.1", "[::1]") for a in addresses)


@dataclass(frozen=True)
class OsRelease:
    id: str
    version_id: str
    codename: str

    @property
    def has_distro_caddy(self) -> bool:
        """Debian 12+ and Ubuntu 24.04+ ship caddy; Ubuntu 22.04 needs Caddy's own repository."""
        major = int(self.version_id.split(".")[0] or 0) if self.version_id[:1].isdigit() else 0
        return (self.id == "debian" and major >= 12) or (self.id == "ubuntu" and major >= 24)


@dataclass(frozen=True)
class Facts:
    """What provision reads from the host before computing its plan."""

    user: str
    env_text: str = ""
    caddyfile: str = ""
    ssh_ports: tuple[int, ...] = (22,)
    pg_port: int = 5432
    # Whether another site on the host still uses the host-wide Redis (then it keeps running).
    shared_redis_used: bool = False
    # The deploy user's GECOS comment (None: no such account) and whether a sum sudoers file already names it.
    deploy_account: str | None = None
    deploy_granted: bool = False
    # The site role's comment (None: no such role).
    db_role: str | None = None
    # A site set up by hand (the runbook's way): its Caddy file when sum_tasks did not write it, its own units.
    hand_caddy: bool = False
    hand_units: tuple[str, ...] = ()
    # Whether a release of sum_tasks is live (`current` exists).
    live: bool = False


def os_release_script() -> Script:
    return Script("read os release", "cat /etc/os-release")


def parse_os_release(text: str) -> OsRelease:
    values = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.MULTILINE))
    return OsRelease(values.get("ID", ""), values.get("VERSION_ID", ""), values.get("VERSION_CODENAME", ""))


def facts_script(site: Site) -> Script:
    """Who we are, the site's .env, the main Caddyfile, sshd's ports, other sites' Redis URLs, PostgreSQL's port."""
    paths = site.paths
    env, user = q(paths.env), q(site.deploy_user)
    role_sql = (f"SELECT 'exists:' || coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles "
                f"WHERE rolname = '{site.db_user}'")
    return Script("read host facts", f"""\
show() {{ [ -f "$1" ] || return 0; cat "$1"; [ -z "$(tail -c 1 "$1")" ] || echo; }}
echo "@@user"; id -un
echo "@@env"; show {env}
echo "@@caddyfile"; show /etc/caddy/Caddyfile
echo "@@ssh_ports"; sshd -T 2>/dev/null | awk '$1 == "port" {{print $2}}'
echo "@@other_sites_redis"; for f in {SRV}/*/.env; do [ "$f" = {env} ] || sed -n 's/^\\(REDIS_URL\\|CELERY_BROKER_URL\\|CELERY_RESULT_BACKEND\\)=//p' "$f"; done 2>/dev/null
echo "@@pg_port"; pg_lsclusters -h 2>/dev/null | sort -k4,4r | awk '{{print $3; exit}}'
echo "@@deploy_account"; getent passwd {user} | awk -F: '{{print "exists:" $5}}'
echo "@@deploy_granted"; grep -lsx {q(site.deploy_user + " ALL=(root) NOPASSWD: " + "SUM_")}'[A-Z0-9_]*' /etc/sudoers.d/sum-*
echo "@@db_role"; runuser -u postgres -- psql -XAtq -c {q(role_sql)} 2>/dev/null
echo "@@hand_caddy"; [ ! -f {q(paths.caddy_site)} ] || grep -qs {q('^' + MARKER)} {q(paths.caddy_site)} || echo yes
echo "@@hand_units"; for u in {' '.join(q(u) for u in hand_unit_names(site))}; do [ ! -e {q(SYSTEMD)}/"$u" ] || echo "$u"; done
echo "@@live"; [ ! -L {q(paths.current)} ] || echo yes
exit 0
""")


def parse_facts(user: str, output: str) -> Facts:
    """`Facts` from `facts_script`'s output; raises ValueError when sshd's ports cannot be read."""
    parts = sections(output)
    ports = tuple(int(p) for p in parts.get("ssh_ports", "").split() if p.isdigit())
    if not ports:
        raise ValueError("could not read the ports sshd listens on (`sshd -T`)")
    return Facts(
        user=user,
        env_text=parts.get("env", ""),
        caddyfile=parts.get("caddyfile", ""),
        ssh_ports=ports,
        pg_port=int(parts.get("pg_port", "").strip() or 5432),
        shared_redis_used=any(map(uses_shared_redis, parts.get("other_sites_redis", "").split())),
        deploy_account=existing(parts.get("deploy_account", "")),
        deploy_granted=bool(parts.get("deploy_granted", "").strip()),
        db_role=existing(parts.get("db_role", "")),
        hand_caddy=parts.get("hand_caddy", "").strip() == "yes",
        hand_units=tuple(parts.get("hand_units", "").split()),
        live=parts.get("live", "").strip() == "yes",
    )


def hand_unit_names(site: Site) -> tuple[str, ...]:
    """The units the runbook has an operator install by hand for a site (names sum_tasks never uses)."""
    prefix = site.paths.unit_prefix
    return (f"{prefix}-gunicorn.service", f"{prefix}-gunicorn.socket")


def existing(section: str) -> str | None:
    """What follows ``exists:`` in a section (a comment, maybe empty), or None when the section does not say ``exists:``."""
    line = section.strip()
    return line.removeprefix("exists:") if line.startswith("exists:") else None
