"""`Script`: a named shell script a task sends to a host, and the ``@@section`` format scripts print.

Every script the tasks send is built by a function in this package that returns a `Script`, so a
unit test can render each one with sample config and run ``shellcheck`` on it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

q = shlex.quote


@dataclass(frozen=True)
class Script:
    """A shell script: `name` says what it does (a failure names it), `text` is what runs.

    It runs as ``<shell> -c TEXT sum ARGS...``, so ``$1``... are `args`, each quoted.
    """

    name: str
    text: str
    shell: str = "sh"
    args: tuple[str, ...] = ()

    def command(self) -> str:
        """The one command line that runs it: the script and every argument quoted."""
        return " ".join([self.shell, "-c", q(self.text), *(["sum", *(q(a) for a in self.args)] if self.args else [])])


@dataclass(frozen=True)
class Result:
    """What running a `Script` gave: its exit status and output."""

    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exited == 0


def sections(text: str) -> dict[str, str]:
    """Output of a script that prints ``@@name`` before each part, as {name: part}."""
    parts: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines(keepends=True):
        if line.startswith("@@"):
            current = line[2:].strip()
            parts[current] = []
        elif current:
            parts[current].append(line)
    return {k: "".join(v) for k, v in parts.items()}


def sections_script(parts: dict[str, str]) -> str:
    """Shell printing ``@@name`` and then the output of each command, in order."""
    return "".join(f"echo @@{name}; {command}\n" for name, command in parts.items())
