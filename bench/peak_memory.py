"""Peak resident memory per call, for the fuzz benches (Linux).

Where the kernel allows it, /proc/self/clear_refs resets the high-water mark (VmHWM) to
the current resident size before each call, so each call's own peak is exact;
otherwise ru_maxrss, a process-wide high-water mark, shows only new peaks."""
from __future__ import annotations

import resource
from pathlib import Path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Memory:
    """Each call's peak resident memory above what the process held when it started."""

    def __init__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            self.exact = False

    def start(self) -> int:
        if self.exact:
            Path("/proc/self/clear_refs").write_text("5")   # VmHWM := VmRSS
            return _status_kb("VmRSS")
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def growth_mb(self, start: int) -> float:
        end = _status_kb("VmHWM") if self.exact else resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss
        return max(0, end - start) / 1024
