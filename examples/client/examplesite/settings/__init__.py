"""Settings package: ``base`` holds what is shared, ``production`` reads the environment."""
