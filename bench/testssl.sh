#!/usr/bin/env bash
# testssl.sh against a local ferricorn serving TLS (docs/tls.md, "Checks").
#
#   bash bench/testssl.sh            # needs `testssl` (Debian: apt-get install testssl.sh)
#
# Starts ferricorn on 127.0.0.1 with a certificate made by trustme (test
# deps: make .venv/.test-deps), runs testssl's protocol, cipher-category,
# server-preference and renegotiation checks, prints their findings and
# fails when SSLv2/SSLv3/TLS 1.0/TLS 1.1 are offered, when a weak cipher
# class (NULL, anonymous, export, LOW, 3DES/IDEA, obsolete CBC) is offered,
# when the server has no cipher order, or when renegotiation is not secure. The certificate's chain of trust is not
# judged (trustme's CA is not a public one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TESTSSL=$(command -v testssl || command -v testssl.sh || true)
[ -n "$TESTSSL" ] || { echo "testssl not found (apt-get install testssl.sh)" >&2; exit 2; }
WORKER=${WORKER:-evloop}
dir=$(mktemp -d)
srv=
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
"$PY" -c "
import trustme, sys
ca = trustme.CA()
ca.issue_cert('127.0.0.1', 'localhost').private_key_and_cert_chain_pem.write_to_path(sys.argv[1])
" "$dir/server.pem"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" -m ferricorn -k "$WORKER" --certfile "$dir/server.pem" -b "127.0.0.1:$port" \
    --pythonpath examples hello:app >"$dir/server.log" 2>&1 &
srv=$!
for _ in $(seq 100); do grep -q 'Booting worker' "$dir/server.log" && break; sleep 0.1; done
grep -q 'Booting worker' "$dir/server.log" || { cat "$dir/server.log"; exit 1; }

timeout 600 "$TESTSSL" --quiet --color 0 --warnings off --ip one --jsonfile "$dir/out.json" \
    -p -s -P -R "127.0.0.1:$port" >"$dir/out.txt" 2>&1 || true
sed -n '/Testing protocols/,$p' "$dir/out.txt"

"$PY" - "$dir/out.json" <<'EOF'
import json, sys
findings = {f["id"]: f for f in json.load(open(sys.argv[1]))}
bad = []
def expect(id_, word):
    f = findings.get(id_)
    if f is None or word not in f["finding"]:
        bad.append("%s: %s" % (id_, f["finding"] if f else "missing"))
for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
    expect(proto, "not offered")
for proto in ("TLS1_2", "TLS1_3"):
    expect(proto, "offered")
for cls in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
            "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):
    expect(cls, "not offered")
f = findings.get("cipher_order")
if not f or f["severity"] != "OK":
    bad.append("cipher_order: %s" % (f["finding"] if f else "missing"))
expect("secure_renego", "supported")
expect("secure_client_renego", "not vulnerable")
if bad:
    print("\nFAILED:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("\ntestssl: no SSLv3/TLS 1.0/1.1, no weak cipher class, server cipher order, secure renegotiation: OK")
EOF
