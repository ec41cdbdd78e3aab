"""Redis: each site's own instance on a unix socket only its app opens; the host-wide one stopped once no site uses it."""

from __future__ import annotations

from ..commands.facts import REDIS_PORT, Facts, loopback_only
from ..commands.script import q
from ..commands.templating import render
from ..configuration import Site
from .base import Op, enabled_op, file_op
from .takeover import hand_site_serving

REDIS_CONF = "/etc/redis/redis.conf"
REDIS_BIND = "bind 127.0.0.1 -::1"
SHARED = "redis-server.service"


def site_redis_ops(site: Site, project_dir: str = "") -> list[Op]:
    paths, ctx = site.paths, {"site": site}
    unit = q(paths.redis)
    restart = f"if systemctl is-active -q {unit}; then systemctl restart {unit}; fi"
    return [
        file_op("redis unit", paths.unit_file(paths.redis), render("redis.service.j2", ctx, project_dir),
                then=f"systemctl daemon-reload && {restart}"),
        file_op("redis config", paths.redis_conf, render("redis.conf.j2", ctx, project_dir), then=restart),
        enabled_op("redis", unit),
        Op(
            "redis answers the app only",
            f"for _ in $(seq 50); do [ -S {q(paths.redis_socket)} ] && break; sleep 0.1; done; "
            f"runuser -u {q(paths.app_user)} -- redis-cli -s {q(paths.redis_socket)} ping",
            "", expect=lambda out: out.strip() == "PONG", verify_only=True, hint=f"see `journalctl -u {paths.redis}`",
        ),
    ]


def shared_redis_ops(facts: Facts) -> list[Op]:
    """The host-wide Redis: loopback only while another site (or this site's hand-made predecessor, still serving) uses
    it, else stopped (nothing to share, nothing to reach)."""
    if not facts.shared_redis_used and not hand_site_serving(facts):
        return [Op("host-wide redis stopped (every site has its own)",
                   f"! systemctl is-enabled -q {SHARED} && ! systemctl is-active -q {SHARED}", f"systemctl disable --now {SHARED}")]
    return [
        Op(
            "host-wide redis bound to loopback (another site still uses it)",
            f"[ \"$(grep -E '^\\s*bind\\s' {REDIS_CONF})\" = {q(REDIS_BIND)} ] && grep -qx 'protected-mode yes' {REDIS_CONF}",
            f"set -e\nsed -i -E -e '/^\\s*bind\\s/d' -e 's/^\\s*protected-mode\\s.*/protected-mode yes/' {REDIS_CONF}\n"
            f"echo {q(REDIS_BIND)} >> {REDIS_CONF}\nsystemctl restart {SHARED}",
        ),
        Op(
            "host-wide redis answers on loopback only", f"redis-cli ping | grep -qx PONG && sleep 0.2 && ss -Hltn 'sport = :{REDIS_PORT}'", "",
            expect=loopback_only, verify_only=True, hint=f"look at {REDIS_CONF} and `journalctl -u redis-server`",
        ),
    ]
