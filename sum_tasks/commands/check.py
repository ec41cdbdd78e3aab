"""The ops smoke checklist (the runbook's section 13) as data: one script gathers every fact in one round trip,
printing sections (``@@name``) that pure functions here turn into `Check` results; the tests feed them data."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ..configuration import COLOURS, Site
from . import backup as backups
from . import offsite, schedules
from .colours import live_colour
from .facts import REDIS_PORT, allowed_ports, loopback_only, ufw_converged, ufw_others
from .health import curl_health, parse_answer
from .manage import manage_script
from .script import Script, q, sections
from .state import state_from

STATUSES = ("ok", "warn", "fail")
TLS_WARN_DAYS = 14
TLS_FAIL_DAYS = 3
# A passed rehearsal older than this means the timer stopped rehearsing: two monthly runs (the default) missed.
REHEARSAL_WARN_DAYS = 62
DISK_MARGIN = 1.5
DISK_WARN_FACTOR = 3
CADDY_ROOT_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
NOT_ROOT = "NOT_ROOT"


@dataclass(frozen=True)
class Check:
    """One line of the checklist."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"  {self.status:<12} {self.name:<14}  {self.detail}"


# ---------------------------------------------------------------- the one remote command




def units(site: Site) -> list[str]:
    """The units `check` expects: the gunicorn colours, celery when enabled, and caddy."""
    return site.paths.app_units() + ["caddy.service"]


def check_script(site: Site, project_dir: str = "") -> Script:
    """The script gathering every fact `check` judges (the backup script's ``list`` at the end)."""
    domain = site.primary_domain
    tls = ""
    if site.tls != "off":
        tls = (
            f"echo @@tls; echo | timeout 10 openssl s_client -connect 127.0.0.1:443 -servername {q(domain)} 2>/dev/null"
            " | openssl x509 -noout -enddate -issuer 2>/dev/null\n"
        )
        if site.tls == "internal":
            tls += f"echo @@tls_ca; openssl x509 -noout -enddate -subject -in {CADDY_ROOT_CA} 2>/dev/null\n"
    return Script("read the host", (
        f"cd {q(site.paths.root)} 2>/dev/null || {{ echo @@missing; exit 0; }}\n"
        # The deploy user's files are read as the deploy user: a link planted there reaches nothing of root's.
        f"dcat() {{ if [ \"$(id -u)\" = 0 ]; then runuser -u {q(site.deploy_user)} -- cat -- \"$1\"; else cat -- \"$1\"; fi; }}\n"
        f"echo @@redis_active; systemctl is-active {q(site.paths.redis)}\n"
        f"echo @@redis_listen; ss -Hltn 'sport = :{REDIS_PORT}'\n"
        "echo @@current; readlink current\n"
        "echo @@live; readlink live.sock\n"
        + "".join(f"echo @@{c}; readlink colours/{c}\n" for c in COLOURS)
        + f"echo @@active; systemctl is-active {' '.join(q(u) for u in units(site))}\n"
        + schedules.show_text(site)
        + "echo @@release_env; dcat current/.release.env 2>/dev/null\n"
        f"echo @@health; {curl_health(site)}; echo\n"
        f"echo @@deploy_check; if [ -L current ]; then {manage_script(site, ['check', '--deploy']).text} 2>&1 </dev/null; "
        "rc=$?; else rc=none; fi; echo @@deploy_check_status; echo \"$rc\"\n"
        "echo @@env_stat; stat -c '%a %U %G' .env 2>&1\n"
        f"echo @@offsite; dcat {q(site.paths.offsite_status)} 2>/dev/null\n"
        f"echo @@rehearsal; dcat {q(site.paths.rehearsal_status)} 2>/dev/null\n"
        f"if [ \"$(id -u)\" = 0 ]; then echo @@ufw; ufw status verbose 2>&1; "
        "echo @@ssh_ports; sshd -T 2>/dev/null | awk '$1 == \"port\" {print $2}'; "
        f"else echo @@ufw; echo {NOT_ROOT}; fi\n"
        "echo @@disk; df -PB1 . | awk 'NR == 2 {print $4}'; "
        "du -sb \"$(readlink -f current)\" \"$(readlink -f current/.venv)\" 2>/dev/null | cut -f1\n"
        + tls
        + f"( {backups.db_script(site, ['list'], project_dir).command()} ) 2>/dev/null\n"
        "exit 0\n"
    ))


# ---------------------------------------------------------------- judging the facts (pure)


def check_redis(site: Site, active: str, listen: str) -> Check:
    """The site's own Redis runs (/health/ proves the app reaches it); the host-wide Redis, if any still runs, is on loopback only."""
    addresses = ", ".join(line.split()[3] for line in listen.splitlines() if len(line.split()) > 3)
    if active.strip() != "active":
        return Check("redis", "fail", f"{site.paths.redis} is {active.strip() or 'unknown'}: see `fab logs --service redis`, or run provision")
    if addresses and not loopback_only(listen):
        return Check("redis", "fail", f"the host-wide Redis listens on {addresses}: bind it to 127.0.0.1 and ::1 (run provision)")
    if addresses:
        return Check("redis", "warn", f"{site.paths.redis} active; the host-wide Redis still runs on {addresses}, "
                     "open to every site: run provision for each site on this host, and it stops")
    return Check("redis", "ok", f"{site.paths.redis} active, on its own socket; no host-wide Redis")


def check_services(site: Site, sections: dict[str, str]) -> list[Check]:
    """The live colour's gunicorn, caddy and (when enabled) celery are active."""
    expected = units(site)
    states = dict(zip(expected, sections.get("active", "").split()))
    state = state_from(sections)
    live = live_colour(state)
    checks = []
    if not state.current:
        checks.append(Check("gunicorn", "fail", "no live release: run `fab release --ref ...`"))
    elif not live:
        checks.append(Check("gunicorn", "fail", f"no colour runs the live release {state.current}: `fab release` or `fab rollback` repairs it"))
    elif state.live != live:
        checks.append(Check("gunicorn", "fail", f"Caddy's live.sock names {state.live or 'nothing'}, but {live} runs the live release: "
                                                "`fab rollback` or `fab release` repairs it"))
    else:
        unit = site.paths.colour(live).unit
        other = "".join(f"; {c} {states.get(site.paths.colour(c).unit, 'unknown')}"
                        + (f" on {state.colours[c]}" if state.colours[c] else "") for c in COLOURS if c != live)
        if states.get(unit) == "active":
            checks.append(Check("gunicorn", "ok", f"{live} live, active, release {state.current}{other}"))
        else:
            checks.append(Check("gunicorn", "fail", f"{live} is live but {states.get(unit, 'unknown')}: see `fab logs`{other}"))
    for unit in (u for u in expected if not site.paths.unit_colour(u)):
        name = {"caddy.service": "caddy", site.paths.celery_beat: "celery beat"}.get(unit, "celery")
        status = states.get(unit, "unknown")
        if status == "active":
            checks.append(Check(name, "ok", f"{unit} active"))
        elif unit != "caddy.service" and status in ("activating", "deactivating"):
            # A release or rollback restarts the worker in the background: the old one finishes its running tasks first.
            checks.append(Check(name, "warn", f"{unit} {status}: restarting after a release or rollback (the running tasks finish "
                                f"first, up to {site.celery_stop_timeout}s); check again shortly"))
        else:
            checks.append(Check(name, "fail", f"{unit} {status}: see `fab logs --service {name.split()[0]}`"))
    return checks


def check_health(section: str, release_env: str) -> Check:
    """/health/ through Caddy: 200 ok is ok, 200 degraded a warning, anything else a failure; the SHA should be the live one's."""
    health = parse_answer(section)
    live_sha = next((line.split("=", 1)[1].strip() for line in release_env.splitlines() if line.startswith("GIT_SHA=")), "")
    detail = health.describe()
    if not health.ok:
        return Check("health", "fail", f"/health/ through Caddy: {detail}")
    if live_sha and health.sha and health.sha != live_sha:
        return Check("health", "warn", f"{detail}, but the live release is {live_sha[:12]}")
    return Check("health", "ok" if health.status == "ok" else "warn", detail)


def check_ufw(status: str, ssh_ports: str) -> Check:
    """UFW active, denying incoming, allowing the SSH ports, 80 and 443 (as provision sets it); an operator's own rules shown."""
    if status.strip() == NOT_ROOT:
        return Check("firewall", "warn", "needs root to read `ufw status`: run check as sum.admin_user (the default without -H)")
    ports = allowed_ports(tuple({int(p) for p in ssh_ports.split() if p.isdigit()} or {22}))
    allowed = sorted({line.split()[0] for line in status.splitlines() if "ALLOW IN" in line}, key=lambda r: (len(r), r))
    if "Status: active" not in status:
        return Check("firewall", "fail", "ufw is not active: run provision")
    others = ufw_others(status, ports)
    if ufw_converged(status, ports):
        return Check("firewall", "ok", f"ufw active, deny incoming, allow {' '.join(allowed)}"
                     + (f" ({' '.join(others)}: not sum_tasks', left alone)" if others else ""))
    want = " ".join(f"{p}/tcp" for p in ports)
    return Check("firewall", "fail", f"ufw allows {' '.join(allowed) or 'nothing'}, provision allows {want} (and denies incoming): run provision")


def check_env(site: Site, stat: str) -> Check:
    """.env is mode 0600 and owned by the deploy user."""
    want = f"600 {site.deploy_user} {site.deploy_user}"
    got = stat.strip()
    if got == want:
        return Check(".env", "ok", f"mode 0600, owner {site.deploy_user}:{site.deploy_user}")
    if len(got.split()) != 3:
        return Check(".env", "fail", f"{site.paths.env} is missing: run provision")
    mode, user, group = got.split()
    return Check(".env", "fail", f"mode 0{mode}, owner {user}:{group}; should be 0600 {site.deploy_user}:{site.deploy_user} (run provision)")


def check_disk(free: int, release: int, venv: int, backup: int) -> Check:
    """Room for one more release (its files and a new venv) and one more backup, with a margin."""
    size = backups.format_size
    estimate = release + venv + backup
    need = int(estimate * DISK_MARGIN)
    detail = (f"{size(free)} free; a release + backup needs ~{size(need)} "
              f"(release {size(release)} + venv {size(venv)} + backup {size(backup)}, x{DISK_MARGIN:g})")
    if free < need:
        return Check("disk", "fail", detail)
    return Check("disk", "warn" if free < need * DISK_WARN_FACTOR else "ok", detail)


def cert_end(text: str) -> datetime | None:
    """The ``notAfter=`` date of `openssl x509 -enddate` output, or None."""
    for line in text.splitlines():
        if line.startswith("notAfter="):
            try:
                return datetime.strptime(" ".join(line[9:].split()), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
            except ValueError:
                return None
    return None


def cert_field(text: str, name: str) -> str:
    line = next((line for line in text.splitlines() if line.startswith(f"{name}=")), "")
    return line.split("=", 1)[1].strip().removeprefix("CN = ") if line else ""


def days_text(seconds: float) -> str:
    return f"{seconds / 86400:.0f} days" if abs(seconds) >= 2 * 86400 else f"{seconds / 3600:.0f}h"


def check_tls(site: Site, served: str, ca: str, now: int) -> Check | None:
    """Days left on the served certificate (``tls: auto``), or on Caddy's internal CA (``tls: internal``)."""
    if site.tls == "off":
        return None
    end = cert_end(served)
    if end is None:
        return Check("tls", "fail", f"no certificate served for {site.primary_domain} on 127.0.0.1:443: see `fab logs --service caddy`")
    left = end.timestamp() - now
    issuer = cert_field(served, "issuer")
    if left <= 0:
        return Check("tls", "fail", f"the certificate for {site.primary_domain} expired {end:%Y-%m-%d %H:%M} UTC (issuer {issuer})")
    if site.tls == "internal":
        served_text = f"served certificate {days_text(left)} left (Caddy renews it)"
        ca_end = cert_end(ca)
        if ca_end is None:
            return Check("tls", "ok", f"internal CA ({issuer}); {served_text}; the CA certificate is readable by root only")
        left = ca_end.timestamp() - now
        return Check("tls", tls_status(left), f"internal CA {cert_field(ca, 'subject')!r}: {days_text(left)} left; {served_text}")
    return Check("tls", tls_status(left), f"{days_text(left)} left, until {end:%Y-%m-%d} (issuer {issuer})")


def tls_status(seconds: float) -> str:
    days = seconds / 86400
    return "fail" if days < TLS_FAIL_DAYS else "warn" if days < TLS_WARN_DAYS else "ok"


def check_backup(site: Site, now: int, entries: list[backups.Entry], media: dict[str, backups.Media],
                 safety: backups.SafetyDb | None = None) -> Check:
    """The newest verified site backup (a dump with its media snapshot): none, or one older than `sum.backups.max_age_hours`,
    is a failure. A database-only dump (a release's, a restore's safety dump) does not count: it holds no media. The
    database the last restore replaced, while it is kept, is named (it takes disk until the next good backup)."""
    kept = f"; {safety.describe()}" if safety else ""
    entry = backups.newest_verified(site, [e for e in entries if e.name in media])
    if entry is None:
        return Check("backup", "fail", f"no verified site backup (database and media) in {site.paths.backups}: run `fab db.backup`{kept}")
    age = now - backups.entry_time(site, entry)
    detail = f"{entry.name}, {backups.format_size(entry.size)} {media[entry.name].describe()}, {backups.format_age(age)} old{kept}"
    limit = site.backups.max_age_hours
    if age > limit * 3600:
        return Check("backup", "fail", f"{detail}: older than sum.backups.max_age_hours ({limit}h); see `fab logs --service backup`, "
                     "then `fab db.backup`")
    return Check("backup", "ok", detail)


DJANGO_CHECK_ID = re.compile(r"\(([a-z_]+\.[EWC]\d+)\)")


def check_offsite(site: Site, text: str, now: int) -> Check | None:
    """With `sum.offsite`, the last good off-site copy: none, or one older than `sum.backups.max_age_hours`, is a failure."""
    if not site.offsite.enabled:
        return None
    status = offsite.parse_status(text)
    if status is None:
        return Check("off-site", "fail", "no off-site copy yet: `fab offsite.copy` (after `fab db.backup`), then see `fab logs --service offsite`")
    detail = status.describe(now)
    if now - status.at > site.backups.max_age_hours * 3600:
        return Check("off-site", "fail", f"{detail}: older than sum.backups.max_age_hours ({site.backups.max_age_hours}h); "
                     "see `fab logs --service offsite`")
    return Check("off-site", "ok", detail)


def check_rehearsal(site: Site, text: str, now: int) -> Check | None:
    """With `sum.offsite`, the last rehearsal from the off-site copy: a failed one fails, none yet (or none passed in
    `REHEARSAL_WARN_DAYS`) is a warning."""
    if not site.offsite.enabled:
        return None
    last = offsite.parse_rehearsal(text)
    if last is None:
        return Check("rehearsal", "warn", f"no rehearsal from the off-site copy yet: {site.paths.offsite_rehearse_timer} runs one on "
                     f"sum.offsite.rehearse ({site.offsite.rehearse}); `fab offsite.rehearse` runs one now")
    if not last.passed:
        return Check("rehearsal", "fail", f"{last.describe(now)}; see `fab logs --service offsite`, then `fab offsite.rehearse`")
    if now - last.at > REHEARSAL_WARN_DAYS * 86400:
        return Check("rehearsal", "warn", f"{last.describe(now)}: none in {REHEARSAL_WARN_DAYS} days, is "
                     f"{site.paths.offsite_rehearse_timer} running? `fab offsite.rehearse` runs one now")
    return Check("rehearsal", "ok", last.describe(now))


def check_deploy(output: str, status: str) -> Check:
    """Django's `check --deploy` on the live release, as the app: its errors fail, its warnings warn, each by id."""
    ids = DJANGO_CHECK_ID.findall(output)
    errors = [i for i in ids if re.search(r"\.[EC]\d+$", i)]
    summary = next((line.strip() for line in output.splitlines() if line.startswith("System check identified")), "")
    if status.strip() == "none":
        return Check("django deploy", "fail", "not run: no live release")
    if status.strip() != "0" and not ids:
        return Check("django deploy", "fail", f"`manage.py check --deploy` did not run (exit {status.strip() or '?'}): "
                     f"{output.strip().splitlines()[-1][:200] if output.strip() else 'no output'}")
    if errors:
        return Check("django deploy", "fail", f"{', '.join(errors)}: `fab manage -- check --deploy` shows them")
    if ids:
        return Check("django deploy", "warn", f"{', '.join(ids)}: `fab manage -- check --deploy` shows them")
    return Check("django deploy", "ok", summary or "no issues")


def check_schedules(site: Site, output: str) -> list[Check]:
    """Each `sum.schedule` entry: its timer runs, and its last run (if any) succeeded; a failed run fails the check."""
    return [Check(f"schedule {name}", "fail" if bad else "ok", text + (": `fab logs --service schedule`" if bad else ""))
            for name, text, bad in schedules.describe(site, output)]


def check_timer(service: dict[str, str], timer: dict[str, str]) -> Check:
    """The nightly backup timer is enabled and running, and its last run did not fail."""
    text = backups.describe_timer(service, timer)
    bad = timer.get("LoadState") != "loaded" or "NOT running" in text or "FAILED" in text
    return Check("backup timer", "warn" if bad else "ok", text)


def judge(site: Site, output: str) -> list[Check]:
    """Every check, from the check script's output."""
    parts = sections(output)
    if "missing" in parts:
        return [Check("site", "fail", f"{site.paths.root} does not exist: run `fab provision`")]
    now, entries, service, timer = backups.parse_list(output)
    now = now or int(time.time())
    disk = [int(n) for n in parts.get("disk", "").split() if n.isdigit()] + [0, 0, 0]
    newest = backups.sorted_entries(site, entries)
    checks = [check_redis(site, parts.get("redis_active", ""), parts.get("redis_listen", ""))]
    checks += check_services(site, parts)
    checks += [
        check_health(parts.get("health", ""), parts.get("release_env", "")),
        check_deploy(parts.get("deploy_check", ""), parts.get("deploy_check_status", "")),
        check_ufw(parts.get("ufw", ""), parts.get("ssh_ports", "")),
        check_env(site, parts.get("env_stat", "")),
        check_disk(disk[0], disk[1], disk[2], newest[0].size if newest else 0),
    ]
    tls = check_tls(site, parts.get("tls", ""), parts.get("tls_ca", ""), now)
    if tls:
        checks.append(tls)
    checks += [check_backup(site, now, entries, backups.parse_media(output), backups.parse_safety(output)), check_timer(service, timer)]
    checks += [c for c in (check_offsite(site, parts.get("offsite", ""), now), check_rehearsal(site, parts.get("rehearsal", ""), now)) if c]
    return checks + check_schedules(site, output)


def counts(checks: list[Check]) -> str:
    return ", ".join(f"{sum(1 for c in checks if c.status == s)} {s}" for s in STATUSES)
