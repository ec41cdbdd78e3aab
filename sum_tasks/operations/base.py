"""`Op`: one converging step of provision, as data: a check that says whether the host matches, and what to run if not.

Operations are pure functions from config and facts to lists of `Op`; ``host/converge.py`` runs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from ..commands.script import q


@dataclass(frozen=True)
class Op:
    """One converging step. Scripts run as root; `stdin` is fed to `apply` (a file's content, SQL)."""

    name: str
    check: str
    apply: str
    expect: Callable[[str], bool] | None = None
    stdin: bytes | None = None
    hint: str = ""
    verify_only: bool = False
    # What the step's output says about the host beyond converged or not (from the check's output).
    describe: Callable[[str], str] | None = None


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
    """A file with exact content, mode and owner, replaced atomically; the content comes on stdin.

    `validate` runs on the new file before it is installed (``{}`` is its path);
    `validate_installed` runs once it is in place, and a failure puts the old file back;
    `then` runs after a change.
    """
    data = content.encode() if isinstance(content, str) else content
    digest = hashlib.sha256(data).hexdigest()
    want = f"{digest} {mode_text(mode)} {owner} {group}"
    check = f'[ "$(sha256sum < {q(path)} | cut -d" " -f1) $(stat -c "%a %U %G" {q(path)})" = {q(want)} ]'
    new, old = q(path + ".sum-new"), q(path + ".sum-old")
    lines = ["set -e", 'src=$(mktemp)', "trap 'rm -f \"$src\"' EXIT", 'cat > "$src"']
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
    return Op(name, check, "\n".join(lines), stdin=data, hint=hint)


def dirs_op(name: str, dirs: list[tuple[str, int, str, str]]) -> Op:
    """Directories with exact mode and owner: ``(path, mode, owner, group)``."""
    want = "\n".join(f"{p} {mode_text(m)} {o} {g}" for p, m, o, g in dirs)
    paths = " ".join(q(p) for p, _, _, _ in dirs)
    check = f'[ "$(stat -c "%n %a %U %G" {paths} 2>/dev/null)" = {q(want)} ]'
    apply_ = "set -e\n" + "\n".join(f"install -d -m {mode_text(m)} -o {q(o)} -g {q(g)} {q(p)}" for p, m, o, g in dirs)
    return Op(name, check, apply_)


def enabled_op(name: str, *units: str) -> Op:
    """`units` enabled and running (the step is named "<name> enabled and running")."""
    names = " ".join(q(u) for u in units)
    return Op(f"{name} enabled and running", f"systemctl is-enabled -q {names} && systemctl is-active -q {names}",
              f"systemctl enable --now {names}")


def absent_op(name: str, paths: list[str], before: str = "", then: str = "") -> Op:
    """Files that must not exist."""
    quoted = " ".join(q(p) for p in paths)
    check = " && ".join(f"[ ! -e {q(p)} ]" for p in paths)
    apply_ = "\n".join(x for x in (before, f"rm -f {quoted}", then) if x)
    return Op(name, check, apply_)


def group_member_op(user: str, group: str, member: bool = True, then: str = "") -> Op:
    """`user` is (or, with `member` false, is not) in `group`."""
    name = f"{user} {'in' if member else 'not in'} {group} group"
    check = f"{'' if member else '! '}id -nG {q(user)} | tr ' ' '\\n' | grep -qx {q(group)}"
    apply_ = f"usermod -aG {q(group)} {q(user)}" if member else f"gpasswd -d {q(user)} {q(group)}"
    return Op(name, check, apply_ + (f" && {then}" if then else ""))
