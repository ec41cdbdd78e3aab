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

from sum_tasks import Report, Script, Site, hooks, host_label, in_site_env, namespace, run, targets

ns = namespace()


@task
def check_deploy(c: Context) -> None:
    """Run Django's `manage.py check --deploy` in the live release, with the site's environment."""
    for conn, site in targets(c, role="deploy"):
        report = Report("site.check-deploy", host_label(conn))
        with report.step("manage.py check --deploy") as step:
            script = Script("manage.py check --deploy",
                            f"{in_site_env(site, site.paths.current)} && .venv/bin/python manage.py check --deploy")
            result = run(conn, script, as_=site.deploy_user, hint="fix the settings Django names, then release again")
            output = (result.stdout + result.stderr).strip()
            step.note(output.splitlines()[-1] if output else "no issues")
        report.summary()


# The project's own sub-collection: `fab site.check-deploy`.
ns.add_collection(Collection("site", check_deploy))

# Overriding a library task: add_task replaces a task of the same name, so
#
#     @task(help={"ref": "tag to put live"})
#     def my_release(c, ref=""):
#         """Release, then tell the team."""
#         from sum_tasks.cli.release import release
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
