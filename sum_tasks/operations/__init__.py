"""Provision as data: pure functions from the config and the host's facts to `Op`s, one module per thing provisioned.

Imports `configuration` and `commands`; never runs anything (``host/converge.py`` does).
"""
