#!/usr/bin/env bash
# Writes the daemon's own configuration schema (`hubwatch config schema`) into the chart's values.schema.json
# as its `config` property (with the definitions it refers to), so that `helm install` refuses what `hubwatch
# validate` refuses, under the same key paths. With --check, fails instead when the committed copy differs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -x target/debug/hubwatch ]] || cargo build --quiet --bin hubwatch
SCHEMA=charts/hubwatch/values.schema.json
target/debug/hubwatch config schema | python3 -c '
import json, sys
config = json.load(sys.stdin)
path, check = sys.argv[1], sys.argv[2] == "--check"
values = json.load(open(path))
definitions = config.pop("definitions", {})
for key in ("$schema", "title"):
    config.pop(key, None)
config["description"] = "hubwatch'"'"'s configuration in its own keys (docs/configuration.md); the chart adds what it owns"
values["properties"]["config"] = config
values["definitions"] = definitions
text = json.dumps(values, indent=2, ensure_ascii=False) + "\n"
if check:
    if open(path).read() != text:
        sys.exit(f"{path} differs from `hubwatch config schema`: run scripts/chart-schema.sh")
else:
    open(path, "w").write(text)
' "$SCHEMA" "${1:-}"
