"""What the operator declares, validated, and where it all lives on a host. Pure: imports nothing else of sum_tasks."""

from .hostmap import COLOURS, HostMap, systemctl
from .settings import HOOK_POINTS, ConfigError, Site, defaults, load_site

__all__ = ["COLOURS", "HOOK_POINTS", "ConfigError", "HostMap", "Site", "defaults", "load_site", "systemctl"]
