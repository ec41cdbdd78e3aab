"""`fab manage`'s one remote command: the site's manage script, its arguments in the one variable sudo keeps."""

from __future__ import annotations

import shlex

from ..configuration import Site
from ..configuration.hostmap import MANAGE_ARGS
from .script import Script, q


def manage_script(site: Site, args: list[str]) -> Script:
    """``manage.py ARGS`` through the site's manage script (``sudo -n``, no arguments: they travel in `MANAGE_ARGS`)."""
    return Script(f"manage.py {' '.join(args)}", f"{MANAGE_ARGS}={q(shlex.join(args))} sudo -n {q(site.paths.manage_script)}")
