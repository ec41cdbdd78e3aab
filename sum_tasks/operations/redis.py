"""Redis: bound to loopback, protected mode, and verified listening nowhere else."""

from __future__ import annotations

from ..commands.facts import REDIS_PORT, loopback_only
from ..commands.script import q
from .base import Op

REDIS_CONF = "/etc/redis/redis.conf"
REDIS_BIND = "bind 127.0.0.1 -::1"


def redis_ops() -> list[Op]:
    return [
        Op(
            "redis bound to loopback",
            f"[ \"$(grep -E '^\\s*bind\\s' {REDIS_CONF})\" = {q(REDIS_BIND)} ] && grep -qx 'protected-mode yes' {REDIS_CONF}",
            f"set -e\nsed -i -E -e '/^\\s*bind\\s/d' -e 's/^\\s*protected-mode\\s.*/protected-mode yes/' {REDIS_CONF}\n"
            f"echo {q(REDIS_BIND)} >> {REDIS_CONF}\nsystemctl restart redis-server",
        ),
        Op(
            "redis answers on loopback only", f"redis-cli ping | grep -qx PONG && sleep 0.2 && ss -Hltn 'sport = :{REDIS_PORT}'", "",
            expect=loopback_only, verify_only=True, hint=f"look at {REDIS_CONF} and `journalctl -u redis-server`",
        ),
    ]
