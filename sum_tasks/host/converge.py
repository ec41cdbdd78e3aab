"""The executor for provision: run each `Op`'s check, apply it where the host differs, check again."""

from __future__ import annotations

from collections.abc import Iterable

from fabric import Connection

from ..commands.script import Script
from ..operations.base import Op
from .output import Report, StepError
from .runner import run


def check_script(op: Op) -> Script:
    return Script(f"check {op.name}", op.check)


def apply_script(op: Op) -> Script:
    return Script(op.name, op.apply)


def is_converged(c: Connection, op: Op) -> tuple[bool, str]:
    """Whether the host matches `op`, and what its `describe` says of the check's output."""
    result = run(c, check_script(op), as_="root", check=False)
    note = op.describe(result.stdout) if op.describe else ""
    if op.expect is not None:
        return result.ok and op.expect(result.stdout), note
    return result.ok, note


def apply(c: Connection, op: Op) -> None:
    run(c, apply_script(op), as_="root", stdin=op.stdin, hint=op.hint)


def converge(c: Connection, ops: Iterable[Op], report: Report, check_only: bool = False) -> None:
    """Run each op's check; apply it where needed (unless `check_only`) and check again."""
    for op in ops:
        with report.step(op.name) as step:
            converged, note = is_converged(c, op)
            if converged:
                step.note(note)
                continue
            if check_only:
                step.would_change("checked again once the changes above are made" if op.verify_only else "")
                continue
            if op.verify_only:
                raise StepError("check failed", op.hint)
            apply(c, op)
            converged, note = is_converged(c, op)
            if not converged:
                raise StepError("applied, but the host still does not match", op.hint)
            step.changed(note)
