"""`tenantctl` on a pseudo-terminal: stdin, stdout and stderr all a TTY of a
given width, answering prompts as a person would."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\r")


@dataclass
class TerminalRun:
    returncode: int
    raw: str  # every byte written to the terminal, escapes included

    @property
    def text(self) -> str:
        """What the terminal showed, without colour and cursor escapes."""
        return ANSI.sub("", self.raw)


def run_in_terminal(cli, *args: str, answer: str | None = None, prompt: str = "Go ahead?",
                    columns: int = 100, timeout: float = 300) -> TerminalRun:
    """Run ``tenantctl ARGS`` in ``cli``'s project on a pseudo-terminal
    ``columns`` wide; type ``answer`` (and Enter) when ``prompt`` appears."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in cli.env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    proc = subprocess.Popen([sys.executable, "-m", "tenantctl", *args], cwd=cli.root, stdin=slave, stdout=slave,
                            stderr=slave, env={**env, "TERM": "xterm-256color"}, start_new_session=True)
    os.close(slave)
    out = bytearray()
    answered = answer is None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if not answered and prompt.encode() in out:
                    os.write(master, f"{answer}\n".encode())
                    answered = True
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
    finally:
        os.close(master)
    return TerminalRun(proc.wait(timeout=30), out.decode(errors="replace"))
