"""How a logical backup's dump is compressed: pg_dump's ``--compress=METHOD[:LEVEL]``,
or zstd applied by tenantctl to the dump's stream.

gzip (pg_dump's own default for the custom format) stays the default. zstd is
faster for the same size or better; pg_dump has it only when built with it
(the embedded PostgreSQL's is not), so tenantctl compresses the stream itself
(the ``zstandard`` library) of a dump pg_dump writes uncompressed, and a
restore decompresses it before pg_restore, whatever either build has
(``STREAMED``; the manifest's ``stream_compression`` says so). lz4 is
pg_dump's only: a method is tried on the pg_dump a backup would run before
anything is dumped or uploaded, and refused in one line naming what that
pg_dump can do. pg_restore reads whatever its build reads, so a restore of a
dump pg_dump compressed makes the same check on its own tools first.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from tenantctl.errors import BackupCorrupt, InvalidInput, UsageError

METHODS = ("gzip", "zstd", "lz4", "none")
DEFAULT = "gzip"
LEVELS = {"gzip": (1, 9), "zstd": (1, 22), "lz4": (1, 12)}  # what PostgreSQL accepts (zstd: its usual range)
STREAMED = ("zstd",)  # compressed by tenantctl on the dump's stream, not by pg_dump
ZSTD_LEVEL = 3  # zstd's own default: faster than gzip's default, and smaller


class CompressionUnsupported(InvalidInput):
    """The method is valid but the pg_dump / pg_restore at hand was built without it."""


@dataclass(frozen=True)
class Compression:
    method: str = DEFAULT
    level: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Compression:
        """``gzip``, ``zstd:3``, ``none`` ...; InvalidInput (exit 3) naming what is allowed, UsageError
        (exit 2) for an empty value."""
        if text is None:
            return cls()
        if not text.strip():  # an unset shell variable, say: naming no method is not asking for the default
            raise UsageError(f"Invalid value for '--compress': {text!r} names no method (one of {', '.join(METHODS)}; "
                             f"leave the option out for {DEFAULT})")
        method, sep, level_text = text.strip().lower().partition(":")
        if method not in METHODS:
            raise InvalidInput(f"--compress {text!r}: the method is one of {', '.join(METHODS)}", rule="compress")
        if not sep:
            return cls(method)
        if method == "none":
            raise InvalidInput("--compress none takes no level", rule="compress")
        low, high = LEVELS[method]
        if not level_text.isdigit() or not low <= int(level_text) <= high:
            raise InvalidInput(f"--compress {text!r}: a {method} level is a whole number from {low} to {high}",
                               rule="compress")
        return cls(method, int(level_text))

    def __str__(self) -> str:
        return self.method if self.level is None else f"{self.method}:{self.level}"

    @property
    def is_default(self) -> bool:
        return self.method == DEFAULT and self.level is None

    @property
    def streamed(self) -> bool:
        """tenantctl compresses the dump's stream (pg_dump writes it uncompressed)."""
        return self.method in STREAMED

    def compressing(self, source: BinaryIO) -> BinaryIO:
        """``source`` (the dump pg_dump writes) read compressed, in whole reads (``read(n)``
        returns n bytes until the end, as a pipe's does: the envelope seals what each read gives)."""
        import zstandard

        # threads=-1: zstd's workers on every core, beside the thread encrypting and uploading what they give.
        compressor = zstandard.ZstdCompressor(level=self.level or ZSTD_LEVEL, threads=-1)
        return _WholeReads(compressor.stream_reader(source))

    def pg_dump_args(self) -> list[str]:
        """The default passes nothing (what backups always did, any pg_dump version);
        ``none`` as level 0, which every pg_dump reads as no compression."""
        if self.is_default:
            return []
        return ["--compress=0" if self.method == "none" else f"--compress={self}"]


@lru_cache(maxsize=32)
def refusal(pg_dump: str, args: tuple[str, ...]) -> str | None:
    """pg_dump's own complaint about ``args`` (None: accepted). The compression
    option is checked while options are parsed, before any connection, so the
    probe connects to a socket directory that does not exist and fails at once."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PGCONNECT_TIMEOUT": "1"}
    probe = subprocess.run([pg_dump, *args, "--format=custom", "--schema-only",
                            "--dbname=host=/nonexistent-tenantctl-probe port=1 dbname=probe user=probe"],
                           capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    for line in probe.stderr.splitlines():
        if "compress" in line.lower():
            return line.removeprefix("pg_dump: error: ").strip()
    return None


class _WholeReads:
    def __init__(self, reader: BinaryIO) -> None:
        self._reader = reader

    def read(self, n: int) -> bytes:
        from tenantctl.drills.envelope import read_exact

        return read_exact(self._reader, n)


def decompressed(method: str, chunks: Iterable[bytes], where: str) -> Iterator[bytes]:
    """The dump whose stream tenantctl compressed with ``method`` (a manifest's ``stream_compression``);
    BackupCorrupt for a stream that is not what it says (``where``: the backup, for the message)."""
    import zstandard

    if not Compression.parse(method).streamed:
        raise InvalidInput(f"{where}: a dump stream compressed with {method!r}, which tenantctl does not read",
                           rule="compress")
    inflate = zstandard.ZstdDecompressor().decompressobj()
    try:
        for chunk in chunks:
            if plain := inflate.decompress(chunk):
                yield plain
    except zstandard.ZstdError as exc:
        raise BackupCorrupt(f"{where}: the dump does not decompress as {method}: {exc}") from None
    if not inflate.eof:
        raise BackupCorrupt(f"{where}: the dump's {method} stream ends before its last frame")


def supported(tools: Path) -> list[str]:
    """The methods a backup with the pg_dump in ``tools`` can use (tenantctl's own, and what it accepts)."""
    return [m for m in METHODS
            if m in STREAMED or refusal(str(tools / "pg_dump"), tuple(Compression(m).pg_dump_args())) is None]


def require(tools: Path, compression: Compression, doing: str = "back up") -> list[str]:
    """pg_dump's arguments for ``compression`` done by pg_dump, or CompressionUnsupported
    when the tools in ``tools`` cannot ``doing`` with it."""
    args = compression.pg_dump_args()
    if not args:
        return args
    why = refusal(str(tools / "pg_dump"), tuple(args))
    if why is not None:
        raise CompressionUnsupported(
            f"cannot {doing} with --compress {compression}: the PostgreSQL tools in {tools} say \"{why}\" "
            f"(they support: {', '.join(supported(tools)) or 'none of ' + ', '.join(METHODS)}); "
            "nothing was written", rule="compress")
    return args
