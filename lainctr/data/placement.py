"""Where a run keeps the splits' sample columns: ``out_of_core: False | True | auto``.

``auto`` reads them into memory when they fit, with room to spare, in the memory this process may use, and
leaves them in their files otherwise (the loader gives the same batches either way, ``tests/test_out_of_core.py``).
"They fit" is: the columns' bytes times the processes of this machine (each DDP rank holds its own copy) are at
most :data:`MEMORY_SHARE` of the available memory, which is the kernel's ``MemAvailable`` capped by the
cgroup's limit minus its usage (a container sees the host's ``MemAvailable``). Where neither can be read, the
columns go into memory, the behaviour before ``auto``, and the log says so.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional, Sequence, Union

import h5py

from . import store

MEMORY_SHARE = 0.5          # the columns may take at most this share of the available memory
SETTINGS = (False, True, "auto")
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),                     # v2
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))  # v1


class Placement(NamedTuple):
    """out_of_core: leave the columns in their files; reason: one line for the log."""
    out_of_core: bool
    reason: str


def check_setting(value: object, where: str) -> Union[bool, str]:
    """``value`` if it is one of :data:`SETTINGS`, else ValueError naming ``where`` and what is allowed."""
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"{where}: out_of_core must be True, False or auto, got {value!r}")


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as fd:
            text = fd.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None       # cgroup v2 writes "max" for no limit


def meminfo_available(path: str = "/proc/meminfo") -> Optional[int]:
    """MemAvailable in bytes, or None where the file or the line is missing."""
    try:
        with open(path) as fd:
            for line in fd:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cgroup_headroom(files: Sequence[Sequence[str]] = CGROUP_FILES) -> Optional[int]:
    """Limit minus usage of this process's memory cgroup in bytes, or None without a limit."""
    for limit_file, usage_file in files:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2 ** 60:    # v1 writes ~2^63 for no limit
            return max(limit - usage, 0)
    return None


def available_memory() -> Optional[int]:
    """The memory this process may still use, in bytes (see the module docstring), or None if unknown."""
    known = [m for m in (meminfo_available(), cgroup_headroom()) if m is not None]
    return min(known) if known else None


def sample_column_bytes(paths: Sequence[str]) -> int:
    """Bytes the sample columns of the split files ``paths`` take in memory (from the files' metadata).

    Raises:
        FileNotFoundError / InputFileError: a file is missing / not readable HDF5 (naming it, as
            :func:`lainctr.data.store.open_columns` does: this runs before the dataset is loaded).
    """
    total = 0
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: file not found")
        with store.readable_h5(path), h5py.File(path, "r") as f:
            total += sum(int(f[name].size) * f[name].dtype.itemsize for name in f.keys())
    return total


def local_processes() -> int:
    """The processes of this run on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without)."""
    return max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)


def choose(setting: Union[bool, str], split_files: Sequence[str], available: Optional[int] = None,
           processes: Optional[int] = None) -> Placement:
    """The placement for ``setting`` (:data:`SETTINGS`); ``auto`` weighs the split files' column bytes times
    ``processes`` (default :func:`local_processes`) against ``available`` (default :func:`available_memory`)."""
    if isinstance(setting, bool):
        return Placement(setting, f"out_of_core: {setting}")
    processes = local_processes() if processes is None else processes
    available = available_memory() if available is None else available
    needed = sample_column_bytes(split_files) * processes
    mib = 2 ** 20
    if available is None:
        return Placement(False, f"out_of_core: auto -> in memory ({needed / mib:,.0f} MiB of sample columns; "
                                "the available memory could not be read)")
    fits = needed <= MEMORY_SHARE * available
    where = "in memory" if fits else "left in their files"
    return Placement(not fits, f"out_of_core: auto -> {where} ({needed / mib:,.0f} MiB of sample columns for "
                               f"{processes} process(es), {available / mib:,.0f} MiB available, limit "
                               f"{MEMORY_SHARE:.0%})")
