# Sourced by the benchmark scripts: starts a throw-away etcd on free loopback ports, in $WORK,
# and stops it on exit. Sets PORT (the client port) and ETCD (its pid).
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PEER=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$PORT" \
  --advertise-client-urls "http://127.0.0.1:$PORT" --listen-peer-urls "http://127.0.0.1:$PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PEER" --initial-cluster "default=http://127.0.0.1:$PEER" \
  --quota-backend-bytes 8589934592 > "$WORK/etcd.log" 2>&1 &
ETCD=$!
trap 'kill $ETCD 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 2
