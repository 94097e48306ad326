"""Human-readable durations for progress lines."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """`3h05m`, `4m12s`, `9s`."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
