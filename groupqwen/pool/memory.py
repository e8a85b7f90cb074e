"""Where the memory budget comes from: the GPU's VRAM through NVML when there is one, else RAM."""

from __future__ import annotations

import os
from dataclasses import dataclass

from groupqwen import log

MiB = 1024 * 1024
_log = log.get(__name__)


@dataclass(frozen=True)
class Budget:
    device: str  # "cuda:0 (NVIDIA H100 …)" or "ram"
    total: int  # bytes the device has
    limit: int  # bytes models may use


def gpu_memory() -> tuple[str, int, int] | None:
    """``(name, total, free)`` of the first GPU through NVML, or ``None`` without one (or without NVML)."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return (name.decode() if isinstance(name, bytes) else str(name)), int(info.total), int(info.free)
    except pynvml.NVMLError as exc:
        _log.warning("NVML failed", error=str(exc))
        return None
    finally:
        pynvml.nvmlShutdown()


def ram() -> tuple[int, int]:
    """``(total, available)`` bytes of RAM."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
        return values["MemTotal"], values.get("MemAvailable", values["MemFree"])
    except (OSError, KeyError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total // 2


def current_rss() -> int:
    """This process's resident set size in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def detect(limit_mb: int | None, share: float, margin_mb: int, use_gpu: bool) -> Budget:
    """The budget: ``limit_mb`` if given, else ``share`` of what is free now minus ``margin_mb``."""
    gpu = gpu_memory() if use_gpu else None
    if gpu is not None:
        name, total, free = gpu
        device, available = f"cuda:0 ({name})", free
    else:
        total, available = ram()
        device = "ram"
    limit = limit_mb * MiB if limit_mb is not None else max(0, int(available * share) - margin_mb * MiB)
    return Budget(device=device, total=total, limit=limit)
