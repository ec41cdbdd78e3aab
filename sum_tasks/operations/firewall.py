"""UFW: deny incoming, allow exactly the SSH ports sshd listens on, 80 and 443."""

from __future__ import annotations

from ..commands.facts import Facts, allowed_ports, ufw_converged
from .base import Op


def firewall_ops(facts: Facts) -> list[Op]:
    ports = allowed_ports(facts.ssh_ports)
    return [Op(
        "firewall (ufw)",
        "ufw status verbose",
        "set -e\nufw --force reset >/dev/null\nufw default deny incoming\nufw default allow outgoing\n"
        + "".join(f"ufw allow {p}/tcp\n" for p in ports)
        + "ufw --force enable",
        expect=lambda out: ufw_converged(out, ports),
    )]
