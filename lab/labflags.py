"""Fault flags for hubwatch's lab: files in $LAB_DIR/flags/NAME (every user) or $LAB_DIR/flags/USER/NAME
(one user), read on every attempt so a test can switch a fault on and off while the lab runs."""

import os
from pathlib import Path


def flag(name, user=None):
    """The flag's content ("1" when the file is empty), or None when the flag is off.
    The user's own flag wins over the global one."""
    flags = Path(os.environ["LAB_DIR"]) / "flags"
    candidates = ([flags / user / name] if user else []) + [flags / name]
    for path in candidates:
        try:
            return path.read_text().strip() or "1"
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
    return None


def seconds(name, user=None):
    """A slow flag's delay: the file's content in seconds (an empty file is 1 s), 0 when the flag is off."""
    value = flag(name, user)
    if value is None:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0
