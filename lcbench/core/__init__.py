"""Configuration and records, the bottom layer: the run config and its fields, errors and exit codes, the
registry, the run folder and its records (`store`, `record`), the optional extras and the bundled specs.
It imports nothing else of lcbench."""
