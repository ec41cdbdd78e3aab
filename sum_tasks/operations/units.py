"""systemd: the gunicorn colours' template unit, their socket directory, the optional celery worker, all enabled."""

from __future__ import annotations

from ..commands.script import q
from ..commands.templating import render
from ..configuration import Site
from .base import Op, absent_op, file_op
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
    celery_unit = paths.unit_file(paths.celery)
    if site.celery:
        ops.append(file_op("celery unit", celery_unit, render("celery.service.j2", ctx, project_dir), then=DAEMON_RELOAD))
    else:
        ops.append(absent_op("no celery unit", [celery_unit], before=f"systemctl disable --now {q(paths.celery)} || true", then=DAEMON_RELOAD))
    names = " ".join(q(u) for u in paths.app_units())
    ops.append(Op("units enabled", f"systemctl is-enabled -q {names}", f"systemctl enable {names}"))
    ops.append(live_socket_op(site))
    return ops
