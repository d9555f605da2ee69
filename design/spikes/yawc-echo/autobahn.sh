#!/usr/bin/env bash
# Autobahn|Testsuite fuzzing-client cases against an echo server, as the workspace's
# scripts/autobahn runs them (kosoku 0.1.0 in a venv, same verdict rules), but for any server
# command and any cases, and with the verdicts counted per case group.
#
# Usage: autobahn.sh NAME 'CASES' SERVER [ARGS...]
#   NAME    the report directory under $CARGO_TARGET_DIR/autobahn-spike/ (default target dir
#           /tmp/yawc-target)
#   CASES   space-separated kosoku --include patterns, e.g. '1.* 2.* 12.* 13.*'
#   SERVER  the echo server binary; it is started with ARGS --addr 127.0.0.1:PORT.
# Environment: AUTOBAHN_TIMEOUT (seconds for the whole run; default 3600).
# Prints the wall time of the kosoku run, then verdicts per group (messages / closing), then the
# cases whose verdict is not OK. Exits 1 if any case got a verdict other than OK, NON-STRICT or
# INFORMATIONAL (the workspace script's rule).
set -euo pipefail

if [[ -z "${AUTOBAHN_BOUNDED:-}" ]]; then
    AUTOBAHN_BOUNDED=1 exec timeout --kill-after=30 "${AUTOBAHN_TIMEOUT:-3600}" "$0" "$@"
fi

name=$1
read -r -a cases <<<"$2"
shift 2
target=${CARGO_TARGET_DIR:-/tmp/yawc-target}
venv=$target/autobahn-venv
reports=$target/autobahn-spike/$name
kosoku_version=0.1.0

server_pid=
stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap stop_server EXIT
trap 'echo "autobahn: stopped by timeout or SIGTERM" >&2; exit 143' TERM
trap 'exit 130' INT

if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('kosoku') == '$kosoku_version'" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kosoku==$kosoku_version"
fi

# kosoku 0.1.0 hands every message to the 12.*/13.* cases as a str (text decoded from UTF-8,
# binary as code points 0-255), which the cases' Python 2 code hashes as bytes: every 12/13 case
# then ends in ERROR "Strings must be encoded before hashing" whatever the server does. Turn the
# str back into the message's bytes first (UTF-8 for text, latin-1 for binary), in this venv only.
case12=$(echo "$venv"/lib/python3*/site-packages/kosoku/cases/case12_x_x.py)
if ! grep -q "spike: str to bytes" "$case12"; then
    "$venv/bin/python" - "$case12" <<'PY'
import sys
path = sys.argv[1]
source = open(path).read()
old = "def onMessage(self, msg, binary):\n"
new = old + "   if isinstance(msg, str):  # spike: str to bytes\n      msg = msg.encode('latin-1' if binary else 'utf-8')\n"
assert source.count(old) == 1, "case12_x_x.py changed; cannot patch"
open(path, "w").write(source.replace(old, new))
PY
fi

port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf "$reports"
mkdir -p "$reports"
"$@" --addr "127.0.0.1:$port" >"$reports/server.log" 2>&1 &
server_pid=$!
for attempt in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null || [[ $attempt == 100 ]]; then
        echo "the server did not start listening on 127.0.0.1:$port; its log:" >&2
        cat "$reports/server.log" >&2
        exit 1
    fi
    sleep 0.1
done

include=()
for case in "${cases[@]}"; do
    include+=(--include "$case")
done
echo "== $name: $* on 127.0.0.1:$port, cases ${cases[*]}, load $(cut -d' ' -f1-3 /proc/loadavg)"
started=$(date +%s.%N)
kosoku_status=0
"$venv/bin/kosoku" --mode fuzzingclient "${include[@]}" --outdir "$reports" "127.0.0.1:$port" \
    >"$reports/kosoku.log" 2>&1 || kosoku_status=$?
ended=$(date +%s.%N)
stop_server
echo "kosoku exit $kosoku_status, wall time $(awk "BEGIN { printf \"%.1f\", $ended - $started }") s, load $(cut -d' ' -f1-3 /proc/loadavg)"

"$venv/bin/python" - "$reports" <<'PY'
import collections, json, os, sys

reports = sys.argv[1]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
with open(os.path.join(reports, "index.json")) as index:
    agents = json.load(index)
cases = {cid: e for agent in agents.values() for cid, e in agent.items()}
if not cases:
    sys.exit("kosoku ran no case")

def key(cid):
    return tuple(int(p) for p in cid.split("."))

verdicts = ["OK", "NON-STRICT", "FAILED", "UNIMPLEMENTED", "INFORMATIONAL"]
seen = {e["behavior"] for e in cases.values()} | {e["behaviorClose"] for e in cases.values()}
verdicts += sorted(seen - set(verdicts))
groups = collections.defaultdict(list)
for cid in sorted(cases, key=key):
    groups[cid.split(".")[0]].append(cid)

for field, title in (("behavior", "messages"), ("behaviorClose", "closing")):
    print(f"\n{title} verdicts per group")
    print("| group | cases | " + " | ".join(verdicts) + " | duration s (sum of kosoku's per-case) |")
    print("|---|---|" + "---|" * len(verdicts) + "---|")
    total = collections.Counter()
    for group in sorted(groups, key=int):
        ids = groups[group]
        counter = collections.Counter(cases[c][field] for c in ids)
        total.update(counter)
        duration = sum(cases[c].get("duration", 0) for c in ids) / 1000
        print(f"| {group}.* | {len(ids)} | " + " | ".join(str(counter[v]) for v in verdicts) + f" | {duration:.1f} |")
    print(f"| all | {len(cases)} | " + " | ".join(str(total[v]) for v in verdicts) + " | |")
print()

failing = False
for cid in sorted(cases, key=key):
    e = cases[cid]
    if e["behavior"] != "OK" or e["behaviorClose"] != "OK":
        with open(os.path.join(reports, e["reportfile"])) as report:
            detail = json.load(report)
        print(f"{e['behavior']}/{e['behaviorClose']} {cid}: {detail.get('description', '')[:160]!r}")
        print(f"    result: {str(detail.get('result', ''))[:200]!r}; close: {str(detail.get('resultClose', ''))[:200]!r}")
    if e["behavior"] not in PASSING or e["behaviorClose"] not in PASSING:
        failing = True
sys.exit(1 if failing else 0)
PY
