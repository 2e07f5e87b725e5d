"""A trial's system metrics, logged at each rung beside its scores under MLflow's `system/` names, so a run shows
what its trial used: CPU utilisation since the last rung (process CPU time over wall time, in percent of one
core: threads can take it above 100), the process's peak resident memory since the trial started (on Linux the
peak is reset when a `Usage` is made, as Tune may run several trials one after another in one process), and on a
GPU each visible device's
memory in use, this process's peak allocation and its utilisation (the last needs pynvml: nvidia-ml-py), for
each device the process has allocated memory on.

Standard library and torch only, read when a rung is logged (no sampling thread). What it cannot see: a trial
whose jobs run on Ray Train workers (`distributed.workers > 1`) uses its GPUs in those workers' processes, so its
GPU figures are absent and its CPU figure is the driving process's.

Run: python -m trainables.sysmetrics      (prints this process's figures)
"""

from __future__ import annotations

import resource
import sys
import time

MB = 2 ** 20


def status_kb(field: str) -> int | None:
    """A field of /proc/self/status in kB (`VmRSS`, `VmHWM`), None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def peak_rss_bytes() -> int:
    """The process's peak resident set size: Linux's VmHWM (resettable, see `reset_peak`), else getrusage's."""
    kb = status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def reset_peak() -> bool:
    """Start the peak resident set size afresh (Linux: `5` to /proc/self/clear_refs); False where the system does
    not allow it (the peak then stays the process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_kb("VmHWM") is not None
    except OSError:
        return False


class Usage:
    """What this process used since the last `take()` (or since it was made: the peak memory too, where the
    system allows)."""

    def __init__(self):
        reset_peak()
        self._wall, self._cpu = time.time(), self._cpu_s()

    @staticmethod
    def _cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def take(self) -> dict[str, float]:
        now, cpu = time.time(), self._cpu_s()
        out = {"system/cpu_utilization_percentage": 100.0 * (cpu - self._cpu) / max(now - self._wall, 1e-6),
               "system/process_peak_memory_megabytes": peak_rss_bytes() / MB}
        self._wall, self._cpu = now, cpu
        torch = sys.modules.get("torch")  # only where the process uses torch: replayed trials never import it
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            for i in range(torch.cuda.device_count()):
                if not torch.cuda.memory_reserved(i):  # a device this process never used: no context made for it
                    continue
                free, total = torch.cuda.mem_get_info(i)
                out[f"system/gpu_{i}_memory_usage_megabytes"] = (total - free) / MB
                out[f"system/gpu_{i}_peak_allocated_megabytes"] = torch.cuda.max_memory_allocated(i) / MB
                try:
                    out[f"system/gpu_{i}_utilization_percentage"] = float(torch.cuda.utilization(i))
                except Exception:  # no pynvml (nvidia-ml-py): utilisation unknown
                    pass
        return out


if __name__ == "__main__":
    usage = Usage()
    sum(i * i for i in range(3_000_000))
    for key, value in usage.take().items():
        print(f"{key:45s} {value:10.1f}")
