"""sum_tasks: Fabric tasks that take a Django/Wagtail site from a bare VPS to a health-checked, backed-up production site.

A client repo's ``fabfile.py``::

    from sum_tasks import hooks, namespace, q, targets
    ns = namespace()          # provision, release, rollback, db.*, ...; add your own tasks to it

What a client repo's own tasks use: ``targets(c)`` yields ``(Connection, Site)`` for the hosts a task
acts on (``-H`` or ``sum.hosts``); ``run(conn, Script(name, text), as_=...)`` runs a script there with
the library's failure policy; ``in_site_env(site, directory)`` is shell that enters a directory with
the site's environment; ``q`` quotes a value for a remote shell; ``Report`` prints steps as the
library's tasks do; ``hooks.on(point)`` registers a Python hook.
"""

from __future__ import annotations

from .cli import hooks, namespace
from .commands.envfile import in_site_env
from .commands.script import Script, q
from .configuration import Site
from .host.output import Report, StepError
from .host.runner import host_label, run
from .host.targets import targets

__all__ = ["Report", "Script", "Site", "StepError", "hooks", "host_label", "in_site_env", "namespace", "ns", "q", "run", "targets"]

ns = namespace()
