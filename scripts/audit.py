#!/usr/bin/env python3
"""Checks Cargo.lock against a RustSec advisory database, as `cargo audit` does, offline.

Usage: scripts/audit.py [ADVISORY_DB]   (default: $HUBWATCH_ADVISORY_DB, else ../shared/advisory-db)

Prints every advisory that applies to a locked crate version: vulnerabilities (exit 1) and informational
ones (unmaintained, unsound: listed, exit 0). Without a database it says so and exits 0: the database is
optional (a clone has none; `cargo audit` fetches its own).
"""
import os
import re
import sys
import tomllib
from pathlib import Path


def version(text):
    """`1.2.3-rc.1` → (1, 2, 3); a pre-release counts as its release (an approximation on the safe side)."""
    core = re.split(r"[-+]", text.strip())[0]
    parts = [int(p) for p in core.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def caret_upper(v, given):
    """The first version ^v excludes, given how many parts were written."""
    major, minor, patch = v
    if major > 0 or given == 1:
        return (major + 1, 0, 0)
    if minor > 0 or given == 2:
        return (0, minor + 1, 0)
    return (0, 0, patch + 1)


def matches(requirement, v):
    """Whether version tuple `v` satisfies a Cargo requirement like `>= 1.2.3, < 2` or `^0.3.1`."""
    for comparator in requirement.split(","):
        comparator = comparator.strip()
        m = re.match(r"^(>=|<=|>|<|=|\^|~)?\s*([0-9][0-9A-Za-z.+-]*)$", comparator)
        if not m:
            raise ValueError(f"cannot read requirement {requirement!r}")
        op, text = m.group(1) or "^", m.group(2)
        bound, given = version(text), len(re.split(r"[-+]", text)[0].split("."))
        ok = {
            ">=": v >= bound,
            "<=": v <= bound,
            ">": v > bound,
            "<": v < bound,
            "=": v == bound,
            "^": bound <= v < caret_upper(bound, given),
            "~": bound <= v < ((bound[0] + 1, 0, 0) if given == 1 else (bound[0], bound[1] + 1, 0)),
        }[op]
        if not ok:
            return False
    return True


def advisories(db, name):
    for path in sorted((db / "crates" / name).glob("*.md")):
        text = path.read_text()
        front = re.search(r"```toml\n(.*?)```", text, re.S)
        if front:
            yield path, tomllib.loads(front.group(1))


def main():
    default = os.environ.get("HUBWATCH_ADVISORY_DB") or str(Path(__file__).resolve().parent.parent.parent / "shared/advisory-db")
    db = Path(sys.argv[1] if len(sys.argv) > 1 else default)
    if not (db / "crates").is_dir():
        print(f"audit: no advisory database at {db}; skipped (cargo audit fetches its own)")
        return 0
    lock = tomllib.loads((Path(__file__).resolve().parent.parent / "Cargo.lock").read_text())
    found, informational = [], []
    for package in lock["package"]:
        v = version(package["version"])
        for path, advisory in advisories(db, package["name"]):
            meta, versions = advisory.get("advisory", {}), advisory.get("versions", {})
            if meta.get("withdrawn"):
                continue
            safe = versions.get("patched", []) + versions.get("unaffected", [])
            if any(matches(r, v) for r in safe):
                continue
            line = f"{package['name']} {package['version']}: {meta.get('id')} {meta.get('title', '')}".strip()
            (informational if meta.get("informational") else found).append(
                f"{line} ({meta['informational']})" if meta.get("informational") else line
            )
    print(f"audit: {len(lock['package'])} locked crates checked against {db}")
    for line in informational:
        print(f"  informational: {line}")
    for line in found:
        print(f"  VULNERABLE: {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
