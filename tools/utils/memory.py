"""Refuse a config whose data or batch cannot fit in memory, before allocating.

The estimates come from the reader (check_data: decoded images) and the model
(estimate_batch_bytes: activations of one training batch); each names the keys
it grows with. A config needing more than the memory available now stops with
one line naming the largest of them, instead of being killed by the kernel."""
import os

HEADROOM = 0.9  # use at most this share of the available memory


def available_bytes():
    """MemAvailable of /proc/meminfo (Linux), else the physical memory, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human(n):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def check(needs, config_path, available=None):
    """NEEDS: list of (bytes, 'what, named by its keys'). Raises ValueError when
    their sum exceeds the available memory."""
    available = available_bytes() if available is None else available
    total = sum(n for n, _ in needs)
    if available is None or total <= HEADROOM * available:
        return
    largest, what = max(needs)
    raise ValueError(f"config file {config_path}: {what}: about {human(largest)} of memory "
                     f"({human(total)} in all with the rest), more than the {human(available)} available")
