"""libmemcached's conformance tool, ``memccapable``, against a real trio-mc process.

It exercises every text command and every binary-protocol opcode with its quiet variant,
and is what memcached users run to check a server.
"""

from __future__ import annotations

import shutil
import subprocess

from procs import ServerProcess


def test_memccapable_passes_ascii_and_binary(server: ServerProcess) -> None:
    tool = shutil.which("memccapable")
    assert tool, "memccapable is missing: apt-get install libmemcached-tools"
    result = subprocess.run([tool, "-h", "127.0.0.1", "-p", str(server.port), "-t", "10"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "All tests passed" in result.stdout, result.stdout + result.stderr
    assert result.stdout.count("[pass]") == 54
