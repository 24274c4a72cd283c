#!/usr/bin/env python3
"""One probe round for one user — log in, start a server, start a kernel and execute code, stop the server —
by hubwatch (A) and by jhub-client 0.1.7's `jhubctl run` (B), alternating A B A B on the real lab. Prints a
Markdown table: wall time, CPU time and peak RSS of each run (per child, from wait4), the hub's own floor (the
spawn and stop durations JupyterHub reports in its metrics), and the A/B ratios.

usage: bench/round_vs_peers.py HUBWATCH_BINARY JHUBCTL LAB_DIR [PAIRS]
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HUBWATCH, JHUBCTL, LAB_DIR = sys.argv[1], sys.argv[2], Path(sys.argv[3])
PAIRS = int(sys.argv[4]) if len(sys.argv) > 4 else 5
LAB = dict(line.split("=", 1) for line in (LAB_DIR / "lab.env").read_text().split() if "=" in line)
HUB = LAB["HUB_URL"]
TOKEN = LAB["HUBWATCH_TOKEN"]
USER = "probe-2"


def hub_seconds():
    """Total seconds JupyterHub reports for successful spawns and stops so far."""
    text = urllib.request.urlopen(f"{HUB}/hub/metrics").read().decode()
    total = 0.0
    for name in ("jupyterhub_server_spawn_duration_seconds_sum", "jupyterhub_server_stop_seconds_sum"):
        for line in text.splitlines():
            if line.startswith(name) and 'status="success"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def measure(command, env):
    floor_before = hub_seconds()
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        out.seek(0)
        output = out.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{command[0]} failed:\n{output[-2000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": usage.ru_maxrss / 1024,
        "floor": hub_seconds() - floor_before,
    }


work = Path(tempfile.mkdtemp())
(work / "hubwatch.yaml").write_text(
    f"""state_path: {work}/state.db
hubs:
  - name: lab
    url: {HUB}
    token: {{env: HUBWATCH_TOKEN}}
    users: [probe-1, {USER}]
"""
)
(work / "nb.ipynb").write_text(json.dumps({
    "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": ["5 * 4"]}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}))
# jhub-client reads the user model's `server` field, which needs more than hubwatch's minimal role: it runs
# with a token of the probe user itself, minted once here.
mint = urllib.request.Request(
    f"{HUB}/hub/api/users/{USER}/tokens", method="POST", data=json.dumps({"expires_in": 3600, "note": "jhub-client bench"}).encode(),
    headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
)
USER_TOKEN = json.load(urllib.request.urlopen(mint))["token"]
env = dict(os.environ, HUBWATCH_TOKEN=TOKEN, JUPYTERHUB_API_TOKEN=USER_TOKEN, RUST_LOG="warn")
hubwatch = [HUBWATCH, "check", "--config", str(work / "hubwatch.yaml"), "--hub", "lab", "--user", USER]
jhubctl = [JHUBCTL, "run", "-n", "nb.ipynb", "--hub", HUB, "-u", USER, "--stop-server", "--output-filename", "out.ipynb"]

rows = []
for pair in range(PAIRS):
    a = measure(hubwatch, env)
    b = measure(jhubctl, env)
    rows.append((a, b))

print("| pair | hubwatch wall (s) | jhub-client wall (s) | hubwatch CPU (s) | jhub-client CPU (s) | hubwatch peak RSS (MB) | jhub-client peak RSS (MB) | hub floor A / B (s) |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for i, (a, b) in enumerate(rows, 1):
    print(f"| {i} | {a['wall']:.2f} | {b['wall']:.2f} | {a['cpu']:.3f} | {b['cpu']:.3f} | {a['rss']:.1f} | {b['rss']:.1f} | {a['floor']:.2f} / {b['floor']:.2f} |")
median = lambda side, key: statistics.median(r[side][key] for r in rows)  # noqa: E731
a_wall, b_wall, a_cpu, b_cpu = median(0, "wall"), median(1, "wall"), median(0, "cpu"), median(1, "cpu")
a_floor = median(0, "floor")
print()
print(f"Medians over {PAIRS} pairs: hubwatch {a_wall:.2f} s wall, {a_cpu:.3f} s CPU, {median(0, 'rss'):.1f} MB; "
      f"jhub-client {b_wall:.2f} s wall, {b_cpu:.3f} s CPU, {median(1, 'rss'):.1f} MB.")
print(f"Ratios hubwatch / jhub-client: wall {a_wall / b_wall:.2f}x, CPU {a_cpu / b_cpu:.2f}x. "
      f"The hub's own spawn + stop time in hubwatch's round: {a_floor:.2f} s; hubwatch's wall above it: "
      f"{a_wall - a_floor:.2f} s ({100 * (a_wall - a_floor) / a_floor:.0f}%), which also holds the login probe and the kernel "
      "start, websocket and execution that the hub does not time.")
