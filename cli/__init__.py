"""The ``bertops`` command, the top layer: it parses flags and calls the pipelines, steps and core."""
