"""The packages every host needs, and Caddy's own apt repository where the distribution has no Caddy."""

from __future__ import annotations

from ..commands.facts import OsRelease
from ..configuration import Site
from .base import Op, enabled_op

BASE_PACKAGES = (
    "ca-certificates", "curl", "git", "sudo", "iproute2",
    "python3", "python3-venv", "python3-pip", "python3-dev", "build-essential", "libpq-dev",
    "postgresql", "postgresql-client", "redis-server", "ufw", "caddy",
    "gzip", "pigz", "zstd",
)
APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold"
CADDY_KEYRING = "/usr/share/keyrings/caddy-stable-archive-keyring.gpg"
CADDY_LIST = "/etc/apt/sources.list.d/caddy-stable.list"
CADDY_REPO = "https://dl.cloudsmith.io/public/caddy/stable"


def caddy_from_official_repo(site: Site, os: OsRelease) -> bool:
    return site.caddy_source == "official" or (site.caddy_source == "auto" and not os.has_distro_caddy)


def installed_check(packages: tuple[str, ...]) -> str:
    """Shell that succeeds when every package in `packages` is installed."""
    names = " ".join(packages)
    return f"[ \"$(dpkg-query -W -f='${{db:Status-Status}}\\n' {names} 2>/dev/null | grep -cx installed)\" = {len(packages)} ]"


def package_ops(site: Site, os: OsRelease) -> list[Op]:
    """Baseline packages, Caddy (from Caddy's repository where the distribution has none) and Redis."""
    ops = []
    if caddy_from_official_repo(site, os):
        ops.append(Op(
            "caddy apt repository",
            f"[ -s {CADDY_KEYRING} ] && [ -s {CADDY_LIST} ]",
            f"set -e\n{APT} install curl gnupg debian-keyring debian-archive-keyring apt-transport-https\n"
            f"curl -1sLf {CADDY_REPO}/gpg.key | gpg --batch --yes --dearmor -o {CADDY_KEYRING}\n"
            f"curl -1sLf {CADDY_REPO}/debian.deb.txt > {CADDY_LIST}",
            hint="check the host reaches dl.cloudsmith.io, or set sum.caddy_source: distro",
        ))
    ops.append(Op(
        "packages", installed_check(BASE_PACKAGES), f"set -e\n{APT} update\n{APT} install {' '.join(BASE_PACKAGES)}",
        hint="read the apt output above; re-run provision once apt works on the host",
    ))
    if site.apt_packages:
        names = " ".join(site.apt_packages)
        ops.append(Op(
            f"site packages ({', '.join(site.apt_packages)})", installed_check(site.apt_packages),
            f"{APT} install {names} || {{ {APT} update && {APT} install {names}; }}",
            hint="check the names in sum.apt_packages exist for this release (`apt-cache policy NAME` on the host)",
        ))
    return ops


SERVICES = ("postgresql", "caddy")


def services_ops() -> list[Op]:
    return [enabled_op("services", *SERVICES)]
