"""The fab tasks: parse flags, choose hosts, run steps, report. The only layer that runs anything on a host (through ``host/``).

Imports everything else; nothing imports it but the package's ``namespace()``.
"""

from __future__ import annotations

from invoke import Collection

from ..configuration import defaults


def namespace() -> Collection:
    """A fresh root collection with every library task and the ``sum`` defaults."""
    from . import check, db, env, lock, logs, manage, offsite, provision, release, rollback, status

    manage.claim_arguments()
    ns = Collection()
    ns.add_task(provision.provision)
    ns.add_task(release.release)
    ns.add_task(rollback.rollback)
    ns.add_task(release.releases_task)
    ns.add_task(lock.unlock)
    ns.add_collection(db.db)
    for t in (check.check, status.status, logs.logs, manage.manage):
        ns.add_task(t)
    ns.add_collection(env.env)
    ns.add_collection(offsite.offsite_collection)
    ns.configure({"sum": defaults(), "run": {"in_stream": False}})
    return ns
