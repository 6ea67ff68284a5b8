"""Memory readings shared by the benchmarks (Linux /proc), and their common sample text."""

from __future__ import annotations

MIXED_TEXT = ("Le Japon, l'Allemagne et la Chine sont des pays. 日本和德国是国家。 Japan and Germany are "
              "countries. Deutschland und Japan sind Länder. ")


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` size field in MB: ``VmRSS`` (now) or ``VmHWM`` (peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset the peak RSS (VmHWM) to the current RSS: Linux's clear_refs accepts 5 for that."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
