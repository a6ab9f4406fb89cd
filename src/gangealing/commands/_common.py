"""Shared pieces of the subcommands."""
from __future__ import annotations

import argparse


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults on every flag and keep description / epilog line breaks."""
