"""A package the lab's kernels import, standing for what a user image ships: importing it fails the way a
broken package does (a missing shared library) while the flag package-broken is set for the kernel's user."""

import os

from labflags import flag

if flag("package-broken", os.environ.get("JUPYTERHUB_USER")):
    raise ImportError(
        "libopenblas.so.0: cannot open shared object file: No such file or directory (flag package-broken)"
    )

VERSION = "1.4.2"
