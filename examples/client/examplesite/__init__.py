"""Example client site deployed by the sum_tasks end-to-end tests.

Deliberately free of Celery: nothing here imports it.
"""
