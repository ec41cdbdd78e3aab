"""provision: converge a bare Debian/Ubuntu host onto the golden path (the runbook's sections 1-8 and 13).

`package_plan` and `host_plan` are pure: they compute the operations from the config and the
facts read from the host. `provision` reads the facts and runs the operations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fabric import Connection
from invoke import Context, task

from . import db, envfile
from .config import COLOURS, Site
from .credentials import new_secret, scram_sha256
from .ops import Op, absent_op, converge, dirs_op, file_op
from .output import Report, StepError, add_secret
from .remote import host_label, no_delay, parse_sections, q, run, targets
from .templating import render

BASE_PACKAGES = (
    "ca-certificates", "curl", "git", "sudo", "iproute2",
    "python3", "python3-venv", "python3-pip", "python3-dev", "build-essential", "libpq-dev",
    "postgresql", "postgresql-client", "redis-server", "ufw", "caddy",
    "gzip", "pigz", "zstd",
)
SYSTEMCTL_PATHS = ("/usr/bin/systemctl", "/bin/systemctl")
CADDY_IMPORT = "import /etc/caddy/sites-enabled/*.caddy"
CADDY_VALIDATE = "runuser -u caddy -- caddy validate --config /etc/caddy/Caddyfile --adapter caddyfile"
CADDY_RELOAD = "systemctl reload-or-restart caddy"
REDIS_CONF = "/etc/redis/redis.conf"
REDIS_BIND = "bind 127.0.0.1 -::1"
CADDY_KEYRING = "/usr/share/keyrings/caddy-stable-archive-keyring.gpg"
CADDY_LIST = "/etc/apt/sources.list.d/caddy-stable.list"
CADDY_REPO = "https://dl.cloudsmith.io/public/caddy/stable"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold"


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
    redis_taken: frozenset[int] = frozenset()


def parse_os_release(text: str) -> OsRelease:
    values = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.MULTILINE))
    return OsRelease(values.get("ID", ""), values.get("VERSION_ID", ""), values.get("VERSION_CODENAME", ""))


def caddy_from_official_repo(site: Site, os: OsRelease) -> bool:
    return site.caddy_source == "official" or (site.caddy_source == "auto" and not os.has_distro_caddy)


def package_plan(site: Site, os: OsRelease) -> list[Op]:
    """Baseline packages, Caddy (from Caddy's repository where the distribution has none) and Redis."""
    ops = []
    if caddy_from_official_repo(site, os):
        ops.append(Op(
            "caddy apt repository",
            f"[ -s {CADDY_KEYRING} ] && [ -s {CADDY_LIST} ]",
            f"set -e\n{APT} install curl gnupg debian-keyring debian-archive-keyring apt-transport-https\n"
            f"curl -1sLf {CADDY_REPO}/gpg.key | gpg --batch --yes --dearmor -o {CADDY_KEYRING}\n"
            f"curl -1sLf {CADDY_REPO}/debian.deb.txt > {CADDY_LIST}",
            hint="check the host reaches dl.cloudsmith.io, or set sum.caddy_source: distro",
        ))
    packages = " ".join(BASE_PACKAGES)
    ops.append(Op(
        "packages",
        f"[ \"$(dpkg-query -W -f='${{db:Status-Status}}\\n' {packages} 2>/dev/null | grep -cx installed)\" = {len(BASE_PACKAGES)} ]",
        f"set -e\n{APT} update\n{APT} install {packages}",
        hint="read the apt output above; re-run provision once apt works on the host",
    ))
    return ops


def sudo_commands(site: Site) -> list[str]:
    """The exact commands the deploy user may run as root: its own units, a few verbs, nothing else."""
    units = [(f"{site.unit_prefix}-gunicorn@{colour}.service", ("start", "stop", "--no-block stop", "restart", "reset-failed"))
             for colour in COLOURS]
    if site.celery:
        units.append((f"{site.unit_prefix}-celery.service", ("start", "stop", "restart")))
    commands = [f"{path} {verb} {unit}" for path in SYSTEMCTL_PATHS for unit, verbs in units for verb in verbs]
    return commands + db.backup_sudo_commands(site)


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


def ufw_converged(status: str, ports: tuple[int, ...]) -> bool:
    """`ufw status verbose` shows it active, denying incoming, and allowing exactly these TCP ports."""
    if "Status: active" not in status or "deny (incoming)" not in status:
        return False
    allowed = set()
    for line in status.splitlines():
        match = re.match(r"^(\S+?)(?: \(v6\))?\s+ALLOW IN\s+", line)
        if match:
            allowed.add(match.group(1))
    return allowed == {f"{p}/tcp" for p in ports}


def loopback_only(ss_output: str) -> bool:
    """Every listening address in `ss -Hltn` output is loopback (and there is at least one)."""
    addresses = [line.split()[3].rsplit(":", 1)[0] for line in ss_output.splitlines() if line.strip()]
    return bool(addresses) and all(a in ("127.0.0.1", "[::1]") for a in addresses)


def db_sql(site: Site, password: str) -> str:
    """Role and database, the role owning it; the password goes as a SCRAM verifier, never in clear."""
    name = site.db_name
    verifier = scram_sha256(password)
    return (
        "\\set ON_ERROR_STOP on\n"
        f"SELECT 'CREATE ROLE \"{name}\" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}')\\gexec\n"
        f"ALTER ROLE \"{name}\" WITH LOGIN NOSUPERUSER NOCREATEROLE PASSWORD '{verifier}';\n"
        f"SELECT 'CREATE DATABASE \"{name}\" OWNER \"{name}\"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{name}')\\gexec\n"
        f"ALTER DATABASE \"{name}\" OWNER TO \"{name}\";\n"
        f"REVOKE CONNECT, TEMPORARY ON DATABASE \"{name}\" FROM PUBLIC;\n"
    )


def db_check(site: Site) -> str:
    """As the deploy user, with the password from .env: the role logs in and owns its database."""
    sql = "SELECT pg_get_userbyid(datdba) = current_user FROM pg_database WHERE datname = current_database()"
    return f"runuser -u {q(site.deploy_user)} -- sh -c {q(envfile.site_psql(site, sql))}"


def host_plan(site: Site, facts: Facts, project_dir: str = "", secret=new_secret) -> list[Op]:
    """Everything after the packages, from the config and the host's facts."""
    user, root = site.deploy_user, site.root
    ctx = {"site": site}
    ops: list[Op] = [
        Op(
            "services enabled and running",
            "systemctl is-enabled -q postgresql redis-server caddy && systemctl is-active -q postgresql redis-server caddy",
            "systemctl enable --now postgresql redis-server caddy",
        ),
        Op(
            f"deploy user {user}",
            f"id -u {q(user)} >/dev/null 2>&1 && [ -d /home/{user} ]",
            f"useradd --create-home --shell /bin/bash --user-group {q(user)}",
        ),
        Op(
            f"{user} {'in' if site.deploy_user_sudo else 'not in'} sudo group",
            f"{'' if site.deploy_user_sudo else '! '}id -nG {q(user)} | tr ' ' '\\n' | grep -qx sudo",
            f"usermod -aG sudo {q(user)}" if site.deploy_user_sudo else f"gpasswd -d {q(user)} sudo",
        ),
        Op(
            f"{user} reads the journal",
            f"id -nG {q(user)} | tr ' ' '\\n' | grep -qx systemd-journal",
            f"usermod -aG systemd-journal {q(user)}",
        ),
    ]
    if site.authorized_keys:
        home = f"/home/{user}"
        ops += [
            dirs_op(f"{user} .ssh directory", [(f"{home}/.ssh", 0o700, user, user)]),
            file_op(f"{user} authorized keys", f"{home}/.ssh/authorized_keys", "".join(k + "\n" for k in site.authorized_keys), 0o600, user, user),
        ]
    alias = "SUM_" + re.sub(r"[^A-Z0-9]", "_", site.site_slug.upper())
    ops.append(file_op(
        "sudoers rule", f"/etc/sudoers.d/{site.unit_prefix}",
        render("sudoers.j2", {**ctx, "alias": alias, "commands": sudo_commands(site)}, project_dir),
        0o440, validate="visudo -cqf {}",
    ))
    if site.ssh_hardening:
        ops += ssh_hardening_ops(site, facts, project_dir)
    ports = tuple(sorted(set(facts.ssh_ports) | {80, 443}))
    ops.append(Op(
        "firewall (ufw)",
        "ufw status verbose",
        "set -e\nufw --force reset >/dev/null\nufw default deny incoming\nufw default allow outgoing\n"
        + "".join(f"ufw allow {p}/tcp\n" for p in ports)
        + "ufw --force enable",
        expect=lambda out: ufw_converged(out, ports),
    ))
    ops += [
        Op(
            "redis bound to loopback",
            f"[ \"$(grep -E '^\\s*bind\\s' {REDIS_CONF})\" = {q(REDIS_BIND)} ] && grep -qx 'protected-mode yes' {REDIS_CONF}",
            f"set -e\nsed -i -E -e '/^\\s*bind\\s/d' -e 's/^\\s*protected-mode\\s.*/protected-mode yes/' {REDIS_CONF}\n"
            f"echo {q(REDIS_BIND)} >> {REDIS_CONF}\nsystemctl restart redis-server",
        ),
        Op(
            "redis answers on loopback only", "redis-cli ping | grep -qx PONG && sleep 0.2 && ss -Hltn 'sport = :6379'", "",
            expect=loopback_only, verify_only=True, hint=f"look at {REDIS_CONF} and `journalctl -u redis-server`",
        ),
        dirs_op("site directories", [
            ("/srv/sum", 0o755, "root", "root"),
            (root, 0o755, user, user),
            (f"{root}/backups", 0o700, user, user),
            (f"{root}/static", 0o755, user, user),
            (f"{root}/media", 0o750, user, "www-data"),
            (f"{root}/releases", 0o755, user, user),
            (f"{root}/venvs", 0o755, user, user),
            (f"{root}/colours", 0o755, user, user),
            ("/var/log/sum", 0o755, "root", "root"),
            (site.log_dir, 0o755, user, user),
        ]),
        Op(
            f"{site.python} can build venvs",
            f"runuser -u {q(user)} -- {q(site.python)} -c 'import venv, ensurepip'",
            "", verify_only=True, hint=f"install the venv package for {site.python} (python3-venv)",
        ),
    ]
    env_text = envfile.merge(facts.env_text, site, secret, facts.pg_port, set(facts.redis_taken))
    values = envfile.parse(env_text)
    password = values["DJANGO_DB_PASSWORD"]
    add_secret(password)
    add_secret(values["DJANGO_SECRET_KEY"])
    ops += [
        file_op(".env", f"{root}/.env", env_text, 0o600, user, user),
        Op(
            "postgresql role and database",
            db_check(site),
            'runuser -u postgres -- psql -X -q -f - < "$SUM_UPLOAD/sql"',
            expect=lambda out: out.strip() == "t",
            uploads={"sql": db_sql(site, password).encode()},
        ),
    ]
    ops += unit_ops(site, project_dir)
    ops += db.backup_ops(site, project_dir)
    ops += caddy_ops(site, facts, project_dir)
    return ops


def ssh_hardening_ops(site: Site, facts: Facts, project_dir: str) -> list[Op]:
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
            "ssh hardening", "/etc/ssh/sshd_config.d/01-sum-hardening.conf",
            render("sshd-hardening.conf.j2", {"permit_root_login": permit_root}, project_dir),
            validate_installed="sshd -t", then="systemctl reload ssh",
        ),
    ]


def unit_ops(site: Site, project_dir: str) -> list[Op]:
    ctx = {"site": site}
    prefix = f"/etc/systemd/system/{site.unit_prefix}"
    reload = "systemctl daemon-reload"
    ops = [
        file_op("gunicorn unit", f"{prefix}-gunicorn@.service", render("gunicorn@.service.j2", ctx, project_dir), then=reload),
        file_op(
            "socket directory", f"/etc/tmpfiles.d/{site.unit_prefix}.conf", render("tmpfiles.conf.j2", ctx, project_dir),
            then=f"systemd-tmpfiles --create /etc/tmpfiles.d/{site.unit_prefix}.conf",
        ),
    ]
    celery_unit = f"{prefix}-celery.service"
    if site.celery:
        ops.append(file_op("celery unit", celery_unit, render("celery.service.j2", ctx, project_dir), then=reload))
    else:
        ops.append(absent_op("no celery unit", [celery_unit], before=f"systemctl disable --now {q(celery_unit)} || true", then=reload))
    units = [f"{site.unit_prefix}-gunicorn@{c}.service" for c in COLOURS] + ([f"{site.unit_prefix}-celery.service"] if site.celery else [])
    names = " ".join(units)
    ops.append(Op("units enabled", f"systemctl is-enabled -q {names}", f"systemctl enable {names}"))
    ops.append(live_socket_op(site))
    return ops


def live_socket_op(site: Site) -> Op:
    """Caddy proxies to `live.sock`: a site released before it existed gets it, naming the colour that runs `current`."""
    root, link = q(site.root), q(f"{site.root}/live.sock")
    return Op(
        "live.sock names the live colour",
        f"[ -L {link} ] || [ ! -L {root}/current ]",
        f"cd {root} && for c in {' '.join(COLOURS)}; do if [ \"$(readlink colours/$c)\" = \"$(readlink current)\" ]; then "
        f"ln -sfn {q(site.run_dir)}/$c.sock live.sock.tmp && chown -h {q(site.deploy_user)}: live.sock.tmp && "
        "mv -T live.sock.tmp live.sock && break; fi; done",
        hint="no colour runs the release `current` names: `fab release` repairs it",
    )


def caddy_ops(site: Site, facts: Facts, project_dir: str) -> list[Op]:
    return [
        Op(
            "caddy in the sockets' group",
            "id -nG caddy | tr ' ' '\\n' | grep -qx www-data",
            "usermod -aG www-data caddy && systemctl restart caddy",
        ),
        dirs_op("caddy sites-enabled", [("/etc/caddy/sites-enabled", 0o755, "root", "root")]),
        file_op(
            "caddy imports sites-enabled", "/etc/caddy/Caddyfile", caddyfile_with_import(facts.caddyfile),
            validate_installed=CADDY_VALIDATE, then=CADDY_RELOAD,
        ),
        file_op(
            "caddy site", f"/etc/caddy/sites-enabled/{site.unit_prefix}.caddy", render("site.caddy.j2", {"site": site}, project_dir),
            validate_installed=CADDY_VALIDATE, then=CADDY_RELOAD, hint="the site config failed `caddy validate`; the previous one is still in place",
        ),
    ]


FACTS_SCRIPT = """\
echo "@@user"; id -un
echo "@@env"; sed -e '$a\\' {env} 2>/dev/null
echo "@@caddyfile"; sed -e '$a\\' /etc/caddy/Caddyfile 2>/dev/null
echo "@@ssh_ports"; sshd -T 2>/dev/null | awk '$1 == "port" {{print $2}}'
echo "@@other_sites_redis"; for f in /srv/sum/*/.env; do [ "$f" = {env} ] || sed -n 's/^REDIS_URL=//p' "$f"; done 2>/dev/null
echo "@@pg_port"; pg_lsclusters -h 2>/dev/null | sort -k4,4r | awk '{{print $3; exit}}'
"""


def read_facts(c: Connection, site: Site) -> Facts:
    out = run(c, FACTS_SCRIPT.format(env=q(f"{site.root}/.env")), root=True).stdout
    sections = parse_sections(out)
    ports = tuple(int(p) for p in sections.get("ssh_ports", "").split() if p.isdigit())
    if not ports:
        raise StepError("could not read the ports sshd listens on (`sshd -T`)",
                        "the firewall step needs them so it never shuts you out; check `sshd -t` on the host")
    return Facts(
        user=c.user,
        env_text=sections.get("env", ""),
        caddyfile=sections.get("caddyfile", ""),
        ssh_ports=ports,
        pg_port=int(sections.get("pg_port", "").strip() or 5432),
        redis_taken=frozenset(n for n in map(envfile.redis_db, sections.get("other_sites_redis", "").split()) if n is not None),
    )


def project_dir(c: Context) -> str:
    return getattr(c.config, "_project_prefix", None) or ""


@task(help={"check": "show what would change; change nothing"})
def provision(c: Context, check: bool = False) -> None:
    """Converge the host onto the golden path: packages, users, firewall, PostgreSQL, Redis, units, Caddy."""
    for conn, site in targets(c, role="admin", destructive=True):
        report = Report("provision --check" if check else "provision", host_label(conn))
        with report.step("read os release"):
            os = parse_os_release(run(no_delay(conn), "cat /etc/os-release").stdout)
            if os.id not in ("debian", "ubuntu"):
                raise StepError(f"unsupported system {os.id!r} {os.version_id}: sum_tasks supports Debian 12+ and Ubuntu 22.04+")
        converge(conn, package_plan(site, os), report, check)
        with report.step("read host facts and plan"):
            plan = host_plan(site, read_facts(conn, site), project_dir(c))
        converge(conn, plan, report, check)
        report.summary()
