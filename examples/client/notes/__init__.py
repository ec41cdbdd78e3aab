"""A tiny notes app: one model, one page."""
