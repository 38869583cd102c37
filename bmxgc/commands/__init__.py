"""The commands as plain functions: the Python API that the CLI renders."""
