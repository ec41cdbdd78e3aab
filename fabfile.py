"""This repo's own fabfile: the library's tasks, as a client repo would use them."""

from sum_tasks import namespace

ns = namespace()
