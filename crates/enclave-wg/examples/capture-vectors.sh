#!/bin/bash
# Re-captures the vectors of tests/wireguard_go_vectors.rs (needs root,
# /dev/net/tun, wireguard-go and wg). Everything happens inside a network
# namespace created here and deleted on exit; nothing touches the root
# namespace. Usage: capture-vectors.sh [responder|responder_load]
set -euo pipefail
MODE=${1:-responder}
NS=enclave-wg-vectors-$$
WORK=$(mktemp -d)
cargo build -q -p enclave-wg --example capture_vectors
BIN=${CARGO_TARGET_DIR:-target}/debug/examples/capture_vectors
python3 -c "import base64;print(base64.b64encode(bytes([0x22]*32)).decode())" > "$WORK/wg.key"
WGPUB=$(wg pubkey < "$WORK/wg.key")
mapfile -t KEYS < <("$BIN" pubkeys)
ip netns add "$NS"
cleanup() {
    [ -n "${WGPID:-}" ] && kill "$WGPID" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip -n "$NS" link set lo up
ip netns exec "$NS" wireguard-go -f wgv0 > "$WORK/wireguard-go.log" 2>&1 &
WGPID=$!
for _ in $(seq 50); do ip -n "$NS" link show wgv0 > /dev/null 2>&1 && break; sleep 0.1; done
ip netns exec "$NS" wg set wgv0 private-key "$WORK/wg.key" listen-port 51820 \
    peer "${KEYS[0]}" allowed-ips 10.99.0.2/32 endpoint 127.0.0.1:40000 \
    peer "${KEYS[1]}" allowed-ips 10.99.0.3/32 endpoint 127.0.0.1:40001
ip -n "$NS" addr add 10.99.0.1/24 dev wgv0
ip -n "$NS" link set wgv0 up
echo "wg_public $WGPUB"
echo "== initiator"
ip netns exec "$NS" "$BIN" initiator "$WGPUB"
echo "== $MODE"
ip netns exec "$NS" "$BIN" "$MODE" "$WGPUB" &
RESPONDER=$!
sleep 0.5
# No echo reply comes back (the program only records the request).
ip netns exec "$NS" ping -c 1 -W 9 -p 656e636c617665 10.99.0.3 > /dev/null || true
wait "$RESPONDER"
