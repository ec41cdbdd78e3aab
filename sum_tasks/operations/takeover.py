"""Taking over a site an operator set up by hand, the runbook's way: its own Caddy file and gunicorn units keep serving
until a release of sum_tasks is live, then the next provision points Caddy at that release and retires them."""

from __future__ import annotations

from ..commands.facts import Facts
from ..commands.script import q
from ..configuration import Site
from ..configuration.hostmap import SYSTEMD
from .base import Op

# What the runbook leaves in the site root that releases no longer use: its checkout and its venv.
HAND_DIRS = ("app", "venv")


def hand_made(site: Site, facts: Facts) -> list[str]:
    """The hand-made pieces of this site on the host: its Caddy file (not written by sum_tasks) and its units."""
    return ([site.paths.caddy_site] if facts.hand_caddy else []) + [f"{SYSTEMD}/{unit}" for unit in facts.hand_units]


def takeover_refusal(site: Site, facts: Facts) -> str:
    """Why provision may not take over the site as it is ('' when it may): pieces made by hand, and no `sum.adopt_existing`."""
    found = hand_made(site, facts)
    if not found or site.adopt_existing:
        return ""
    return (f"site {site.site_slug} was set up by hand ({', '.join(found)}): set sum.adopt_existing: true to take it over "
            "(see the runbook's Taking over a site)")


def hand_site_serving(facts: Facts) -> bool:
    """A hand-made site keeps serving (through its own Caddy file and units, on what it used) until a release of sum_tasks is live."""
    return bool(facts.hand_caddy or facts.hand_units) and not facts.live


def keeps_hand_caddy(facts: Facts) -> bool:
    return facts.hand_caddy and hand_site_serving(facts)


def kept_caddy_op(site: Site) -> Op:
    return Op("caddy site", "true", "", describe=lambda _: f"kept the hand-made {site.paths.caddy_site} serving until this "
              "site's first release: run `fab release`, then `fab provision` again to move Caddy to it")


def takeover_ops(site: Site, facts: Facts) -> list[Op]:
    """After the Caddy step: the hand-made units stopped, disabled and removed once a release of sum_tasks is live."""
    if not facts.hand_units:
        return []
    units = " ".join(q(u) for u in facts.hand_units)
    files = [f"{SYSTEMD}/{u}" for u in facts.hand_units]
    if not facts.live:
        return [Op("hand-made units", "true", "", describe=lambda _: f"kept {' '.join(facts.hand_units)} serving until this site's "
                   "first release")]
    leftovers = " ".join(q(f"{site.paths.root}/{d}") for d in HAND_DIRS)

    def left_alone(out: str) -> str:
        found = out.split()
        return f"left alone, no longer used by the site: {' '.join(found)} (remove them by hand)" if found else ""

    return [Op(
        "hand-made units retired",
        f"ls -d {leftovers} 2>/dev/null; " + " && ".join(f"[ ! -e {q(f)} ]" for f in files),
        f"set -e\nsystemctl disable --now {units}\nrm -f {' '.join(q(f) for f in files)}\nsystemctl daemon-reload",
        describe=left_alone,
    )]
