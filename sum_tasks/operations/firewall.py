"""UFW: deny incoming, allow the SSH ports sshd listens on, 80 and 443; rules an operator added are left alone."""

from __future__ import annotations

from ..commands.facts import UFW_COMMENT, Facts, allowed_ports, ufw_converged, ufw_others
from ..commands.script import q
from .base import Op


def firewall_ops(facts: Facts) -> list[Op]:
    ports = allowed_ports(facts.ssh_ports)
    wanted = " ".join(f"{p}/tcp" for p in ports)

    def left_alone(status: str) -> str:
        others = ufw_others(status, ports)
        return f"left alone, not made by sum_tasks: {' '.join(others)}" if others else ""

    return [Op(
        "firewall (ufw)",
        "ufw status verbose",
        "set -e\nufw default deny incoming >/dev/null\nufw default allow outgoing >/dev/null\n"
        + "".join(f"ufw allow {p}/tcp comment {UFW_COMMENT} >/dev/null\n" for p in ports)
        # Its own rules for ports it no longer wants (sshd moved): removed; nobody else's.
        + f"wanted={q(' ' + wanted + ' ')}\n"
        + f"ufw show added | sed -n \"s|^ufw allow \\([0-9]*/tcp\\) comment '{UFW_COMMENT}'$|\\1|p\" | while read -r rule; do "
        'case "$wanted" in *" $rule "*) ;; *) ufw delete allow "$rule" >/dev/null;; esac; done\n'
        "ufw --force enable >/dev/null",
        expect=lambda out: ufw_converged(out, ports),
        describe=left_alone,
    )]
