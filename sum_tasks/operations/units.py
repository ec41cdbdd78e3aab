"""systemd: the gunicorn colours' template unit, their socket directory, the optional celery worker, all enabled."""

from __future__ import annotations

from ..commands.script import q
from ..commands.templating import render
from ..configuration import Site
from ..configuration.hostmap import COLOURS, MANAGE_ARGS, SYSTEMCTL, SYSTEMD
from .base import Op, absent_op, enabled_op, file_op
from .site import live_socket_op

DAEMON_RELOAD = "systemctl daemon-reload"


def unit_ops(site: Site, project_dir: str = "") -> list[Op]:
    paths, ctx = site.paths, {"site": site}
    ops = [
        file_op("gunicorn unit", paths.unit_file(paths.gunicorn_template), render("gunicorn@.service.j2", ctx, project_dir), then=DAEMON_RELOAD),
        file_op(
            "socket directory", paths.tmpfiles, render("tmpfiles.conf.j2", ctx, project_dir),
            then=f"systemd-tmpfiles --create {q(paths.tmpfiles)}",
        ),
    ]
    for name, unit, template, wanted in (("celery", paths.celery, "celery.service.j2", site.celery),
                                         ("celery beat", paths.celery_beat, "celerybeat.service.j2", site.celery_beat)):
        if wanted:
            ops.append(file_op(f"{name} unit", paths.unit_file(unit), render(template, ctx, project_dir), then=DAEMON_RELOAD))
        else:
            ops.append(absent_op(f"no {name} unit", [paths.unit_file(unit)], before=f"systemctl disable --now {q(unit)} || true",
                                 then=DAEMON_RELOAD))
    names = " ".join(q(u) for u in paths.app_units())
    ops.append(Op("units enabled", f"systemctl is-enabled -q {names}", f"systemctl enable {names}"))
    ops.append(live_socket_op(site))
    ops.append(file_op("manage script", paths.manage_script, render("manage.py.j2", {"site": site, "manage_args": MANAGE_ARGS}, project_dir),
                       0o755, validate="python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' {}"))
    return ops + standby_ops(site, project_dir) + schedule_ops(site, project_dir)


def standby_ops(site: Site, project_dir: str = "") -> list[Op]:
    """With `sum.standby_minutes`, the timer that stops the warm standby that long after a switch; without, none."""
    paths = site.paths
    service, timer = paths.standby_service, paths.standby_timer
    if not site.standby_minutes:
        return [absent_op("no standby timer", [paths.unit_file(service), paths.unit_file(timer)],
                          before=f"systemctl disable --now {q(timer)} || true", then=DAEMON_RELOAD)]
    ctx = {"site": site, "colours": COLOURS, "systemctl": SYSTEMCTL}
    return [
        file_op("standby timer unit", paths.unit_file(service), render("standby.service.j2", ctx, project_dir), then=DAEMON_RELOAD),
        file_op("standby timer", paths.unit_file(timer), render("standby.timer.j2", ctx, project_dir), then=f"{DAEMON_RELOAD} && systemctl restart {q(timer)}"),
        enabled_op("standby timer", timer),
    ]


def schedule_ops(site: Site, project_dir: str = "") -> list[Op]:
    """Each `sum.schedule` entry's service and timer, the timer enabled; a schedule no longer configured removed."""
    paths, ops = site.paths, []
    for name, entry in site.schedule.items():
        service, timer = paths.schedule(name)
        ctx = {"site": site, "name": name, "entry": entry, "service": service}
        ops += [
            file_op(f"schedule {name} unit", paths.unit_file(service), render("schedule.service.j2", ctx, project_dir), then=DAEMON_RELOAD),
            file_op(f"schedule {name} timer", paths.unit_file(timer), render("schedule.timer.j2", ctx, project_dir),
                    then=f"{DAEMON_RELOAD} && systemctl restart {q(timer)}"),
            enabled_op(f"schedule {name} timer", timer),
        ]
    # The timers this site has: its marker on their first line (another site's slug may share the name's prefix).
    marker = f"# Managed by sum_tasks for site {site.site_slug}: schedule "
    have = (f"grep -lx {q(marker)}'[a-z0-9_-]*' {q(SYSTEMD)}/{q(paths.unit_prefix)}-schedule-*.timer 2>/dev/null | "
            "sed 's|.*/||' | sort")
    want = "\n".join(sorted(paths.schedule(name)[1] for name in site.schedule))
    ops.append(Op(
        "no other schedules", f"[ \"$({have})\" = \"$(printf {q(want)})\" ]",
        f"keep={q(' ' + ' '.join(paths.schedule(n)[1] for n in site.schedule) + ' ')}; {have} | while read -r t; do "
        'case "$keep" in *" $t "*) continue;; esac; systemctl disable --now "$t"; '
        f"rm -f {q(SYSTEMD)}/\"$t\" {q(SYSTEMD)}/\"${{t%.timer}}.service\"; done; {DAEMON_RELOAD}",
    ))
    return ops
