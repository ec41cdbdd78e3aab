"""A site's release state on a host: the script that reads it in one round trip, and the typed `ReleaseState` parsed from it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..configuration import COLOURS, Site
from .health import socket_colour
from .script import Script, q, sections, sections_script

MISSING = 3


@dataclass(frozen=True)
class ReleaseState:
    """What is live, what each colour runs, the release records and directories. Missing parts read as empty."""

    current: str = ""
    live: str = ""
    env: str = ""
    colours: dict[str, str] = field(default_factory=lambda: dict.fromkeys(COLOURS, ""))
    env_stamps: dict[str, str] = field(default_factory=lambda: dict.fromkeys(COLOURS, ""))
    active: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(COLOURS, False))
    dirs: frozenset[str] = frozenset()
    building: tuple[str, ...] = ()
    records: tuple[dict, ...] = ()
    venvs: tuple[str, ...] = ()
    migrations: str = ""

    def record(self, release_id: str) -> dict:
        """The newest record of `release_id`, or an empty one."""
        return next((r for r in reversed(self.records) if r["id"] == release_id), {})


def state_script(site: Site, migrations: str = "") -> Script:
    """Prints the live release, each colour's release and .env stamp, records, release dirs (and `migrations`' output)."""
    paths = site.paths
    parts = {"current": "readlink current", "live": "readlink live.sock", "env": "sha256sum < .env"}
    for c in COLOURS:
        parts[c] = f"readlink colours/{c}"
        parts[f"{c}.env"] = f"cat colours/{c}.env"
    parts |= {
        "active": "systemctl is-active " + " ".join(q(paths.colour(c).unit) for c in COLOURS),
        "dirs": "ls -1 releases",
        "building": "ls -1d releases/*/.building releases/.incoming-*",
        "records": "cat releases.jsonl",
        "venvs": "ls -1 venvs",
    }
    if migrations:
        parts["migrations"] = migrations
    return Script("read the release state", f"cd {q(paths.root)} || exit {MISSING}\n{sections_script(parts)}")


def parse_records(text: str) -> tuple[dict, ...]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "id" in record:
            records.append(record)
    return tuple(records)


def link_name(target: str) -> str:
    """The release id a symlink's target names (its last path component)."""
    return target.strip().rstrip("/").rsplit("/", 1)[-1]


def parse_state(output: str) -> ReleaseState:
    """`ReleaseState` from `state_script`'s output."""
    return state_from(sections(output))


def state_from(parts: dict[str, str]) -> ReleaseState:
    """`ReleaseState` from the sections of `state_script` (`check` prints some of the same)."""
    active = parts.get("active", "").split()
    return ReleaseState(
        current=link_name(parts.get("current", "")),
        live=socket_colour(parts.get("live", "")),
        env=parts.get("env", "").strip(),
        colours={c: link_name(parts.get(c, "")) for c in COLOURS},
        env_stamps={c: parts.get(f"{c}.env", "").strip() for c in COLOURS},
        active={c: (active[i] if i < len(active) else "") == "active" for i, c in enumerate(COLOURS)},
        dirs=frozenset(parts.get("dirs", "").split()),
        building=tuple(p.split("/")[1] for p in parts.get("building", "").split()),
        records=parse_records(parts.get("records", "")),
        venvs=tuple(parts.get("venvs", "").split()),
        migrations=parts.get("migrations", "").strip(),
    )
