"""The drill's --compress option: what it accepts, what it passes to pg_dump, and
the refusal of a method the installed pg_dump lacks (the real pg_dump of the
embedded PostgreSQL, probed without a server)."""

from __future__ import annotations

import pytest

from tenantctl.drills.compression import (
    METHODS,
    Compression,
    CompressionUnsupported,
    decompressed,
    require,
    supported,
)
from tenantctl.drills.pgtools import find_tools
from tenantctl.errors import BackupCorrupt, InvalidInput


@pytest.mark.parametrize(("text", "method", "level", "args"), [
    (None, "gzip", None, []),                      # the default: what backups always did, no option passed
    ("gzip", "gzip", None, []),
    ("GZIP:9", "gzip", 9, ["--compress=gzip:9"]),
    ("zstd", "zstd", None, ["--compress=zstd"]),
    ("zstd:22", "zstd", 22, ["--compress=zstd:22"]),
    ("lz4:1", "lz4", 1, ["--compress=lz4:1"]),
    ("none", "none", None, ["--compress=0"]),      # level 0: no compression for every pg_dump version
])
def test_accepted_values_and_the_pg_dump_arguments(text, method, level, args):
    compression = Compression.parse(text)
    assert (compression.method, compression.level) == (method, level)
    assert compression.pg_dump_args() == args
    assert Compression.parse(str(compression)) == compression  # what the manifest records reads back


@pytest.mark.parametrize(("text", "says"), [
    ("brotli", "one of gzip, zstd, lz4, none"),
    ("gzip:0", "from 1 to 9"),
    ("gzip:10", "from 1 to 9"),
    ("zstd:23", "from 1 to 22"),
    ("lz4:x", "from 1 to 12"),
    ("none:1", "takes no level"),
])
def test_refused_values_name_what_is_allowed(text, says):
    with pytest.raises(InvalidInput, match=says) as refused:
        Compression.parse(text)
    assert refused.value.exit_code == 3 and refused.value.rule == "compress"


@pytest.mark.parametrize("text", ["", "  "])
def test_an_empty_method_is_a_usage_error_not_the_default(text):
    """`--compress ""` (an unset shell variable, say) names no method: refused, not taken as gzip."""
    with pytest.raises(InvalidInput, match="'--compress'.*one of gzip, zstd, lz4, none") as refused:
        Compression.parse(text)
    assert refused.value.exit_code == 2


@pytest.fixture(scope="module")
def tools():
    try:
        return find_tools(16)  # --compress=METHOD needs pg_dump 16 or later
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no pg_dump 16+: {exc}")


def test_the_installed_pg_dump_is_probed_for_each_method(tools):
    methods = supported(tools)
    assert {"gzip", "none", "zstd"} <= set(methods)  # every build has gzip and none; zstd is tenantctl's
    for method in METHODS:
        compression = Compression(method)
        if compression.streamed:  # pg_dump writes it uncompressed: nothing of its build to ask
            continue
        if method in methods:
            assert require(tools, compression) == compression.pg_dump_args()
        else:  # e.g. zstd / lz4 in a build without them: one line, exit 3, naming what works
            with pytest.raises(CompressionUnsupported) as refused:
                require(tools, compression)
            message = str(refused.value)
            assert "\n" not in message and refused.value.exit_code == 3
            assert f"--compress {method}" in message and f"they support: {', '.join(methods)}" in message
            assert "nothing was written" in message


def test_zstd_compresses_the_dump_stream_in_whole_reads_and_restores_it_whole():
    import io
    import os

    from tenantctl.drills.envelope import CHUNK

    dump = b"".join(f"COPY row {n} {os.urandom(8).hex()}\n".encode() for n in range(200_000))
    reader = Compression.parse("zstd:1").compressing(io.BytesIO(dump))
    reads = list(iter(lambda: reader.read(CHUNK), b""))
    assert all(len(r) == CHUNK for r in reads[:-1]) and 0 < len(reads[-1]) <= CHUNK  # the envelope's chunks
    assert sum(map(len, reads)) < len(dump) / 2
    assert b"".join(decompressed("zstd:1", reads, "backup b1")) == dump
    with pytest.raises(BackupCorrupt, match="backup b1: the dump's zstd stream ends before its last frame"):
        b"".join(decompressed("zstd", reads[:-1] + [reads[-1][:-8]], "backup b1"))
    with pytest.raises(BackupCorrupt, match="backup b1: the dump does not decompress as zstd"):
        b"".join(decompressed("zstd", [b"not zstd at all" * 10], "backup b1"))
    with pytest.raises(InvalidInput, match="compressed with 'gzip', which tenantctl does not read"):
        b"".join(decompressed("gzip", reads, "backup b1"))
