"""Settings: ``base`` is shared and reads no environment; ``production`` reads everything host-specific from it."""
