"""What is sent to a host and read back, as data: every shell script as a named `Script`, the typed facts parsed
from what scripts print, and the pure decisions made on them (which colour is free, what to prune).

Imports `configuration` only; never runs anything.
"""
