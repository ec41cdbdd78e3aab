"""The studio site's deploy tasks: all of them come from sum_tasks, configured by fabric.yaml.

    fab --list
    fab provision                # once per server (and after changing fabric.yaml)
    fab release --ref v1.0       # build a tag beside the live release, switch when /health/ passes
"""

from sum_tasks import namespace

ns = namespace()
