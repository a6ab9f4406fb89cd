"""Subcommands of the gangealing CLI (discovered by gangealing.cli)."""
