"""The ``mcrelay`` command."""
