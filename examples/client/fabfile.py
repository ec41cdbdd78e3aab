"""This client repo's tasks: every sum_tasks task, plus the project's own.

    fab --list                                  # provision, release, rollback, db.*, ... and site.check-deploy
    fab -H root@vps provision                   # first run: the deploy user does not exist yet
    fab -H deploy@vps release --ref v1.2        # build v1.2 beside the live release, switch once healthy
    fab site.check-deploy                       # this project's own task (below)

Settings live in fabric.yaml (under `sum`); hosts come from `sum.hosts` when `-H` is absent.
"""

from __future__ import annotations

from typing import Any

from fabric import Connection
from invoke import Collection, Context, task

from sum_tasks import hooks, namespace
from sum_tasks.config import Site
from sum_tasks.hooks import command_script
from sum_tasks.output import Report, StepError
from sum_tasks.remote import host_label, run, targets

ns = namespace()


@task
def check_deploy(c: Context) -> None:
    """Run Django's `manage.py check --deploy` in the live release, with the site's environment."""
    for conn, site in targets(c, role="deploy"):
        report = Report("site.check-deploy", host_label(conn))
        with report.step("manage.py check --deploy") as step:
            script = command_script(site, f"{site.root}/current", ".venv/bin/python manage.py check --deploy")
            result = run(conn, script, user=None if conn.user == site.deploy_user else site.deploy_user, warn=True)
            output = (result.stdout + result.stderr).strip()
            if not result.ok:
                raise StepError(output or f"exit status {result.exited}", "fix the settings Django names, then release again")
            step.note(output.splitlines()[-1] if output else "no issues")
        report.summary()


# The project's own sub-collection: `fab site.check-deploy`.
ns.add_collection(Collection("site", check_deploy))

# Overriding a library task: add_task replaces a task of the same name, so
#
#     @task(help={"ref": "tag to put live"})
#     def my_release(c, ref=""):
#         """Release, then tell the team."""
#         from sum_tasks.release import release
#         release(c, ref=ref)
#         c.run(f"notify-team 'released {ref}'")
#
#     ns.add_task(my_release, name="release")
#
# makes `fab release --ref v1.2` run my_release instead of the library's release.


@hooks.on("after_switch")
def say_what_is_live(c: Connection, site: Site, info: dict[str, Any]) -> None:
    """A harmless Python hook: print the SHA that has just gone live (runs on this machine)."""
    print(f"[{host_label(c)}] {site.site_slug} now serves {str(info.get('sha', '?'))[:12]} ({info.get('ref', '?')})")
