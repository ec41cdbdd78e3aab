"""fab manage -- ARGS: a management command in the live release, as the app's own user, with the site's environment.

Fabric runs what follows ``--`` as a shell command on every host; for `manage` it must not, so `claim_arguments`
takes those words before Fabric plans its calls (the fabfile's ``namespace()`` calls it while the fabfile loads).
"""

from __future__ import annotations

import sys

from invoke import Context, task
from invoke.exceptions import Exit

from ..commands.manage import manage_script
from ..host.runner import interactive
from ..host.targets import targets

_claimed: list[str] = []


def claim_arguments(argv: list[str] | None = None) -> None:
    """When the command line is ``fab [options] manage -- ARGS``: keep ARGS (as the shell split them) for `manage`,
    and clear Fabric's remainder so it does not also run them as a command on the hosts."""
    argv = sys.argv if argv is None else argv
    if "--" not in argv or "manage" not in argv[:argv.index("--")]:
        return
    _claimed[:] = argv[argv.index("--") + 1:]
    try:
        from fabric.main import program
    except ImportError:
        return
    core = getattr(program, "core", None)
    if core is not None:
        core.remainder = ""


@task
def manage(c: Context) -> None:
    """Run a management command in the live release as the app's own user: ``fab manage -- createsuperuser``.

    From a terminal it is interactive (``fab manage -- shell``); from a pipe it reads stdin. Its exit status is fab's.
    """
    if not _claimed:
        raise Exit("give the management command after --: fab manage -- createsuperuser", code=2)
    status = 0
    for conn, site in targets(c):
        status = interactive(conn, manage_script(site, _claimed)) or status
    if status:
        raise Exit(code=status)
