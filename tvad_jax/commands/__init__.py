"""Argument parsing for each `tvad` command group; the work itself lives in the library."""
