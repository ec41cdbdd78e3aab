"""Backups: restic, the backup script, the nightly service and timer, the postgres units of db.rehearse and db.restore, and
the app-user unit that stages and switches a site restore's media."""

from __future__ import annotations

from ..commands.backup import restore_db_name, safety_db_name, scratch_db_name, script_text
from ..commands.templating import render
from ..configuration import Site
from .base import Op, absent_op, enabled_op, file_op
from .packages import APT
from .units import DAEMON_RELOAD


def postgres_unit(site: Site, command: str, title: str, what: str) -> str:
    """A oneshot unit, run as postgres, that runs one `command` of the installed backup script and nothing else."""
    return (
        f"# Managed by sum_tasks for site {site.site_slug}: {what}.\n"
        "# The deploy user may start this unit, nothing more.\n"
        "[Unit]\n"
        f"Description=SUM site {site.site_slug}: {title}\n"
        "After=postgresql.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        "User=postgres\n"
        f"ExecStart={site.paths.backup_script} {command}\n"
        "NoNewPrivileges=yes\n"
        "PrivateTmp=yes\n"
        "ProtectSystem=full\n"
    )


def scratch_unit(site: Site, action: str) -> str:
    """Create or drop the rehearsal database (owned by the site's role) for `fab db.rehearse`."""
    return postgres_unit(site, f"scratch {action}", f"{action} the rehearsal database",
                         f"{action} the rehearsal database {scratch_db_name(site)} (owned by role {site.db_user}) for `fab db.rehearse`")


def restore_units(site: Site) -> dict[str, str]:
    """db.restore's three units, by unit name: create the database a backup is loaded into, switch it in, switch back."""
    live, copy, kept, paths = site.db_name, restore_db_name(site), safety_db_name(site), site.paths
    units = [
        (paths.restore_create, "create", "create the database a restore loads the backup into",
         f"drop an earlier restore's {kept}, create {copy} (owned by role {site.db_user}) for `fab db.restore` to load a backup into"),
        (paths.restore_switch, "switch", "switch the restored database in",
         f"for `fab db.restore`, rename {live} to {kept} and {copy} to {live} in one transaction (dropping an earlier {kept})"),
        (paths.restore_back, "back", "put the replaced database back",
         f"for `fab db.restore` when the app is unhealthy after the switch: rename {live} to {copy} and {kept} to {live}"),
    ]
    return {unit: postgres_unit(site, f"restoredb {action}", title, what) for unit, action, title, what in units}


def backup_ops(site: Site, project_dir: str = "") -> list[Op]:
    """The backup script, the nightly service and timer (enabled and started), and the postgres units of rehearse and restore."""
    paths = site.paths
    ctx = {"site": site, "script": paths.backup_script}
    return [
        Op(
            "backup tools (igzip)", "command -v igzip >/dev/null",
            f"{APT} install isal || {{ {APT} update && {APT} install isal; }}",
            hint="install the isal package (igzip): the fast gzip the backups use",
        ),
        Op("restic installed", "command -v restic >/dev/null", f"{APT} install restic || {{ {APT} update && {APT} install restic; }}",
           hint="install the restic package: site backups keep media in a restic repository"),
        file_op("backup script", paths.backup_script, script_text(site, project_dir), 0o755),
        file_op("backup service", paths.unit_file(paths.backup_service), render("backup.service.j2", ctx, project_dir), then=DAEMON_RELOAD),
        file_op(
            "backup timer", paths.unit_file(paths.backup_timer), render("backup.timer.j2", ctx, project_dir),
            then=f"{DAEMON_RELOAD} && systemctl try-restart {paths.backup_timer}",
        ),
        file_op("scratch database create unit", paths.unit_file(paths.scratch_create), scratch_unit(site, "create"), then=DAEMON_RELOAD),
        file_op("scratch database drop unit", paths.unit_file(paths.scratch_drop), scratch_unit(site, "drop"), then=DAEMON_RELOAD),
        *(file_op(f"restore database unit {unit}", paths.unit_file(unit), text, then=DAEMON_RELOAD) for unit, text in restore_units(site).items()),
        file_op("site restore's media unit", paths.unit_file(paths.media_template), render("media@.service.j2", ctx, project_dir),
                then=DAEMON_RELOAD),
        absent_op("no media recovery unit of an earlier version", [paths.unit_file(f"{paths.unit_prefix}-media-restore.service")],
                  then=DAEMON_RELOAD),
        *alert_ops(site, project_dir),
        enabled_op("backup timer", paths.backup_timer),
    ]


def curl_config(url: str) -> str:
    """A curl config naming `url` (checked to hold no quote or backslash), so the URL stays out of argv."""
    return f'url = "{url}"\n'


def alert_ops(site: Site, project_dir: str = "") -> list[Op]:
    """With `sum.alerts.webhook`: the alert script, its unit and the URL's file; with `success_url`, the ping's file."""
    paths, user = site.paths, site.deploy_user
    alerts, ctx = site.alerts, {"site": site}
    ops = []
    if alerts.webhook:
        ops += [
            file_op("alert webhook (sum.alerts.webhook)", paths.alert_conf, curl_config(alerts.webhook), 0o640, group=user),
            file_op("alert script", paths.alert_script, render("alert.sh.j2", ctx, project_dir), 0o755),
            file_op("alert unit", paths.unit_file(paths.alert_template), render("alert@.service.j2", ctx, project_dir), then=DAEMON_RELOAD),
        ]
    else:
        ops.append(absent_op("no alert webhook", [paths.alert_conf, paths.alert_script, paths.unit_file(paths.alert_template)],
                             then=DAEMON_RELOAD))
    if alerts.success_url:
        ops.append(file_op("success ping (sum.alerts.success_url)", paths.ping_conf, curl_config(alerts.success_url), 0o640, group=user))
    else:
        ops.append(absent_op("no success ping", [paths.ping_conf]))
    return ops
