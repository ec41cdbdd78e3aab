"""The executor: connecting, running a `Script` (one runner, one failure policy), converging `Op`s, and what the operator sees.

Imports `configuration` and `commands`; knows nothing of tasks.
"""
