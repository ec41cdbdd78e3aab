"""sum_tasks: Fabric tasks that take a Django/Wagtail site from a bare VPS to a health-checked, backed-up production site.

A client repo's ``fabfile.py``::

    from sum_tasks import namespace
    ns = namespace()          # provision, release, rollback, db.*, ...; add your own tasks to it
"""

from __future__ import annotations

from invoke import Collection

from .config import DEFAULTS

__all__ = ["namespace", "ns"]


def namespace() -> Collection:
    """A fresh root collection with every library task and the ``sum`` defaults."""
    from . import check, db, env, logs, provision, release, status

    ns = Collection()
    ns.add_task(provision.provision)
    for t in (release.release, release.rollback, release.releases, release.unlock):
        ns.add_task(t)
    ns.add_collection(db.db)
    for t in (check.check, status.status, logs.logs):
        ns.add_task(t)
    ns.add_collection(env.env)
    ns.configure({"sum": DEFAULTS, "run": {"in_stream": False}})
    return ns


ns = namespace()
