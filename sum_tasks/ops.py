"""Idempotent operations: a check that says whether the host is converged, and what to run if not.

Plans are lists of `Op` computed by pure functions from config and facts; `converge` runs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fabric import Connection

from .output import Report, StepError
from .remote import cleanup, q, run, upload


@dataclass(frozen=True)
class Op:
    """One converging step. Scripts run as root; ``$SUM_UPLOAD`` holds `uploads` while `apply` runs."""

    name: str
    check: str
    apply: str
    expect: Callable[[str], bool] | None = None
    uploads: dict[str, bytes] = field(default_factory=dict)
    hint: str = ""
    verify_only: bool = False


def is_converged(c: Connection, op: Op) -> bool:
    result = run(c, op.check, root=True, warn=True)
    if op.expect is not None:
        return result.ok and op.expect(result.stdout)
    return result.ok


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def apply(c: Connection, op: Op) -> None:
    tmp = upload(c, op.uploads) if op.uploads else ""
    try:
        script = f"SUM_UPLOAD={q(tmp)}\n{op.apply}" if tmp else op.apply
        result = run(c, script, root=True, warn=True)
    finally:
        if tmp:
            cleanup(c, tmp)
    if not result.ok:
        output = _tail(result.stderr or result.stdout)
        raise StepError(f"exit status {result.exited}\n{output}", op.hint)


def converge(c: Connection, ops: Iterable[Op], report: Report, check_only: bool = False) -> None:
    """Run each op's check; apply it where needed (unless `check_only`) and check again."""
    for op in ops:
        with report.step(op.name) as step:
            if is_converged(c, op):
                continue
            if check_only:
                step.would_change("checked again once the changes above are made" if op.verify_only else "")
                continue
            if op.verify_only:
                raise StepError("check failed", op.hint)
            apply(c, op)
            if not is_converged(c, op):
                raise StepError("applied, but the host still does not match", op.hint)
            step.changed()


def mode_text(mode: int) -> str:
    return format(mode, "o")


def file_op(
    name: str,
    path: str,
    content: str | bytes,
    mode: int = 0o644,
    owner: str = "root",
    group: str = "root",
    validate: str = "",
    validate_installed: str = "",
    then: str = "",
    hint: str = "",
) -> Op:
    """A file with exact content, mode and owner, replaced atomically.

    `validate` runs on the new file before it is installed (``{}`` is its path);
    `validate_installed` runs once it is in place, and a failure puts the old file back;
    `then` runs after a change.
    """
    data = content.encode() if isinstance(content, str) else content
    digest = hashlib.sha256(data).hexdigest()
    want = f"{digest} {mode_text(mode)} {owner} {group}"
    check = f'[ "$(sha256sum < {q(path)} | cut -d" " -f1) $(stat -c "%a %U %G" {q(path)})" = {q(want)} ]'
    new, old = q(path + ".sum-new"), q(path + ".sum-old")
    lines = ["set -e", 'src="$SUM_UPLOAD/content"']
    if validate:
        lines.append(validate.replace("{}", '"$src"'))
    lines.append(f"install -m {mode_text(mode)} -o {q(owner)} -g {q(group)} \"$src\" {new}")
    if validate_installed:
        lines += [
            f"if [ -e {q(path)} ]; then cp -p {q(path)} {old}; else rm -f {old}; fi",
            f"mv -f {new} {q(path)}",
            f"if ! out=$({validate_installed} 2>&1); then",
            f"  if [ -e {old} ]; then mv -f {old} {q(path)}; else rm -f {q(path)}; fi",
            '  echo "$out" >&2; exit 1',
            "fi",
            f"rm -f {old}",
        ]
    else:
        lines.append(f"mv -f {new} {q(path)}")
    if then:
        lines.append(then)
    return Op(name, check, "\n".join(lines), uploads={"content": data}, hint=hint)


def dirs_op(name: str, dirs: list[tuple[str, int, str, str]]) -> Op:
    """Directories with exact mode and owner: ``(path, mode, owner, group)``."""
    want = "\n".join(f"{p} {mode_text(m)} {o} {g}" for p, m, o, g in dirs)
    paths = " ".join(q(p) for p, _, _, _ in dirs)
    check = f'[ "$(stat -c "%n %a %U %G" {paths} 2>/dev/null)" = {q(want)} ]'
    apply_ = "set -e\n" + "\n".join(f"install -d -m {mode_text(m)} -o {q(o)} -g {q(g)} {q(p)}" for p, m, o, g in dirs)
    return Op(name, check, apply_)


def absent_op(name: str, paths: list[str], before: str = "", then: str = "") -> Op:
    """Files that must not exist."""
    quoted = " ".join(q(p) for p in paths)
    check = " && ".join(f"[ ! -e {q(p)} ]" for p in paths)
    apply_ = "\n".join(x for x in (before, f"rm -f {quoted}", then) if x)
    return Op(name, check, apply_)
