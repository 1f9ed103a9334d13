"""What Linux says about a process (CPU time, resident memory) and which commit was measured.

Shared by the benchmarks that run ``vigil run`` as a child (scale, shards, models, series_cap),
which used to carry their own copies of these readers.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of one process (all threads), from /proc/<pid>/stat."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def status_kib(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of /proc/<pid>/status, in KiB (VmRSS, VmHWM, ...)."""
    out = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Vm"):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields = status_kib(pid)
    return fields["VmRSS"] / 1024, fields["VmHWM"] / 1024


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process has had, in MiB."""
    return memory_mib(pid)[1]


def commit(root: pathlib.Path) -> str | None:
    """The short commit of ``root`` with " + local changes" when tracked files differ; None outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out + (" + local changes" if dirty else "")
