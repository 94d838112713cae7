"""Where a restore writes, as a plain enum: the CLI's `--target` option needs it
without loading the drill models (``drills.models`` re-exports it)."""

from __future__ import annotations

from enum import Enum


class Target(str, Enum):
    scratch = "scratch"
    in_place = "in-place"
