"""Engines behind one interface (base.Engine). Import the concrete engine lazily:
both pull in pulumi, which commands like `list` and `--help` must not pay for."""
