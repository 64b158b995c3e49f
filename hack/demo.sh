#!/usr/bin/env bash
# The local demo: a Consul agent, CoreDNS with berth, the exporter watching
# this machine's Docker Engine, berth-proxy, and two instances of a small web
# service. It shows the DNS answers, reaches the service by name through the
# proxy with curl, then keeps everything running until Ctrl-C (or exits at
# once with BERTH_DEMO_EXIT=1). Run it through `make demo`, which builds
# bin/ and Consul first.
#
# CoreDNS runs the site's own deploy/dns/Corefile, moved to loopback (see
# corefile below), so the demo and a deployment cannot drift apart.
# Everything is on this machine's loopback, which each part publishes or
# dials only when told to: the exporter's --allow-loopback, the plugin's
# allow_loopback, berth-proxy's --allow-loopback.
#
# A part that does not start, or stops, ends the demo with the end of its log,
# and the logs folder is kept. Ctrl-C (also under `make demo | tee file`)
# removes the demo's containers and its temporary folder, once, and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every port is the environment's to change.
: "${BERTH_DEMO_DNS_PORT:=1053}"      # CoreDNS, UDP and TCP
: "${BERTH_DEMO_METRICS_PORT:=9153}"  # CoreDNS's /metrics
: "${BERTH_DEMO_CONSUL_PORT:=8500}"   # Consul's HTTP API; it also takes the next three
: "${BERTH_DEMO_EXPORTER_PORT:=9753}" # berth-exporter's /metrics and /healthz
: "${BERTH_DEMO_SOCKS_PORT:=1080}"    # berth-proxy's SOCKS5
: "${BERTH_DEMO_HTTP_PORT:=3128}"     # berth-proxy's HTTP proxy and /proxy.pac
export BERTH_DEMO_DNS_PORT BERTH_DEMO_METRICS_PORT # the Corefile reads them

# This run's containers carry berth.demo=<id>: the exporter publishes only
# them (--only-label), and the cleanup removes them all, the ones started
# from another shell too.
demo_id="demo-$$"
work="$(mktemp -d -t berth-demo.XXXXXX)"
pids=()
declare -A part_of=() log_of=()
failed=0
cleaned=0

# err prints on stderr, which still reaches the terminal when a `| tee` in
# front of it died of the same Ctrl-C; a closed stderr is ignored (fd 3 is
# the real stderr, bash's own complaint goes to /dev/null).
err() { { printf 'demo: %s\n' "$*" >&3; } 3>&2 2>/dev/null || true; }

cleanup() {
  ((cleaned)) && return 0
  cleaned=1
  trap '' INT TERM PIPE # a second Ctrl-C must not cut the cleanup short
  set +e
  err "cleaning up"
  local ids
  ids="$(docker ps -aq --filter "label=berth.demo=$demo_id" 2>/dev/null)"
  [[ -n "$ids" ]] && docker rm -f $ids >/dev/null 2>&1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if ((failed)); then
    err "logs kept in $work"
  else
    rm -rf "$work"
  fi
}
interrupted() {
  cleanup
  exit 0
}
trap cleanup EXIT
trap interrupted INT TERM

# fail PART WHY: the demo cannot go on; show PART's log and keep the logs.
fail() {
  failed=1
  err "$1 $2; the end of its log (${log_of[$1]:-none}):"
  if [[ -n "${log_of[$1]:-}" ]]; then { tail -n 40 "${log_of[$1]}" >&3; } 3>&2 2>/dev/null || true; fi
  exit 1
}

# start PART COMMAND...: runs COMMAND in the background, logging to
# $work/PART.log.
start() {
  local part=$1
  shift
  log_of[$part]="$work/$part.log"
  "$@" >"${log_of[$part]}" 2>&1 &
  pids+=($!)
  part_of[$!]=$part
}

# ready PART CHECK...: waits up to 30 s for CHECK to succeed while PART runs.
ready() {
  local part=$1 pid=${pids[-1]}
  shift
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || fail "$part" "exited at start"
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "$part" "did not become ready within 30 s"
}

# free PORT VARIABLE: refuses a port something else listens on, which would
# otherwise answer in the demo's place.
free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    err "127.0.0.1:$1 is in use; set $2 to a free port"
    exit 1
  fi
}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need dig || ! need curl; then
  echo "demo: installing dig (bind9-dnsutils) and curl from Debian"
  apt-get update -qq && apt-get install -y -qq bind9-dnsutils curl >/dev/null
fi
need docker || { err "needs the docker CLI and a running Docker Engine"; exit 1; }

consul_ports=("$BERTH_DEMO_CONSUL_PORT" $((BERTH_DEMO_CONSUL_PORT + 1)) $((BERTH_DEMO_CONSUL_PORT + 2)) $((BERTH_DEMO_CONSUL_PORT + 3)))
free "$BERTH_DEMO_DNS_PORT" BERTH_DEMO_DNS_PORT
free "$BERTH_DEMO_METRICS_PORT" BERTH_DEMO_METRICS_PORT
for p in "${consul_ports[@]}"; do free "$p" BERTH_DEMO_CONSUL_PORT; done
free "$BERTH_DEMO_EXPORTER_PORT" BERTH_DEMO_EXPORTER_PORT
free "$BERTH_DEMO_SOCKS_PORT" BERTH_DEMO_SOCKS_PORT
free "$BERTH_DEMO_HTTP_PORT" BERTH_DEMO_HTTP_PORT
echo "demo: ports (BERTH_DEMO_*_PORT change them): DNS $BERTH_DEMO_DNS_PORT, CoreDNS metrics" \
  "$BERTH_DEMO_METRICS_PORT, Consul ${consul_ports[*]}, exporter $BERTH_DEMO_EXPORTER_PORT," \
  "SOCKS5 $BERTH_DEMO_SOCKS_PORT, HTTP proxy $BERTH_DEMO_HTTP_PORT, all on 127.0.0.1"

# corefile: deploy/dns/Corefile on loopback. The server block listens on
# 127.0.0.1 and the demo's port, the plugin allows loopback addresses, the ns
# line's address is 127.0.0.1, metrics go to the demo's port, and health and
# ready (fixed ports on every address) are left out. Each change is checked,
# so that a reshaped deploy/dns/Corefile stops the demo instead of changing
# it silently.
corefile() {
  sed -E \
    -e '/^[[:space:]]*#/d' \
    -e 's/^([^[:space:]#][^[:space:]]*) \{$/\1:{$BERTH_DEMO_DNS_PORT} {\n    bind 127.0.0.1/' \
    -e 's/^([[:space:]]*)berth \{$/\1berth {\n\1    allow_loopback/' \
    -e 's/^([[:space:]]*ns [^[:space:]]+) .*$/\1 127.0.0.1/' \
    -e 's/^([[:space:]]*prometheus) .*$/\1 127.0.0.1:{$BERTH_DEMO_METRICS_PORT}/' \
    -e '/^[[:space:]]*(health|ready)([[:space:]]|$)/d' \
    deploy/dns/Corefile
}
corefile >"$work/Corefile"
for want in ':{$BERTH_DEMO_DNS_PORT} {' 'bind 127.0.0.1' 'allow_loopback' ' 127.0.0.1:{$BERTH_DEMO_METRICS_PORT}' 'ns .* 127.0.0.1$'; do
  if ! grep -q -- "$want" "$work/Corefile"; then
    failed=1
    err "deploy/dns/Corefile changed shape: '$want' is missing from the demo's Corefile ($work/Corefile); update corefile in hack/demo.sh"
    exit 1
  fi
done
zone="$(sed -nE 's/^([^[:space:]]+):\{\$BERTH_DEMO_DNS_PORT\} \{$/\1/p' "$work/Corefile" | head -n 1)"

consul="$(bash hack/get-consul.sh)"
echo "demo: starting Consul on 127.0.0.1:$BERTH_DEMO_CONSUL_PORT"
export CONSUL_HTTP_ADDR="127.0.0.1:$BERTH_DEMO_CONSUL_PORT"
start consul "$consul" agent -dev -bind 127.0.0.1 -client 127.0.0.1 \
  -http-port "${consul_ports[0]}" -server-port "${consul_ports[1]}" \
  -serf-lan-port "${consul_ports[2]}" -serf-wan-port "${consul_ports[3]}" \
  -dns-port -1 -grpc-port -1 -hcl 'ports { grpc_tls = -1 }' -log-level warn
ready consul "$consul" kv put berth-demo/ready 1

echo "demo: starting CoreDNS with berth for $zone on 127.0.0.1:$BERTH_DEMO_DNS_PORT (deploy/dns/Corefile, with allow_loopback)"
start coredns bin/coredns -conf "$work/Corefile"
loaded() { [[ "$(dig @127.0.0.1 -p "$BERTH_DEMO_DNS_PORT" +norec +noall +comments "$zone" SOA)" == *"flags: qr aa"* ]]; }
ready coredns loaded

echo "demo: starting berth-exporter on the local Docker Engine (--allow-loopback, only berth.demo=$demo_id)"
start exporter bin/berth-exporter --node demo-host --advertise-addr 127.0.0.1 --allow-loopback \
  --only-label "berth.demo=$demo_id" --listen "127.0.0.1:$BERTH_DEMO_EXPORTER_PORT"
ready exporter curl -fsS "http://127.0.0.1:$BERTH_DEMO_EXPORTER_PORT/healthz"

echo "demo: starting berth-proxy (--allow-loopback; SOCKS5 127.0.0.1:$BERTH_DEMO_SOCKS_PORT, HTTP 127.0.0.1:$BERTH_DEMO_HTTP_PORT)"
start proxy bin/berth-proxy --allow-loopback --socks "127.0.0.1:$BERTH_DEMO_SOCKS_PORT" \
  --http "127.0.0.1:$BERTH_DEMO_HTTP_PORT" --dns "127.0.0.1:$BERTH_DEMO_DNS_PORT" --zones "$zone"
ready proxy curl -fsS "http://127.0.0.1:$BERTH_DEMO_HTTP_PORT/proxy.pac"

echo "demo: building the web service image (FROM scratch, a static Go binary)"
log_of[web]="$work/web.log"
mkdir -p "$work/image"
{
  CGO_ENABLED=0 go build -trimpath -o "$work/image/web" ./internal/testenv/testsvc &&
    printf 'FROM scratch\nCOPY web /web\nEXPOSE 80\nENTRYPOINT ["/web"]\n' >"$work/image/Dockerfile" &&
    docker build -q -t berth-demo-web "$work/image"
} >"${log_of[web]}" 2>&1 || fail web "could not be built"

for i in 1 2; do
  name="berth-demo-web-$i"
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" -l "berth.demo=$demo_id" -l berth.service=web.shop -l berth.port.80.name=http \
    -e TESTSVC_NAME="$name" -p 80 berth-demo-web >>"${log_of[web]}" 2>&1 || fail web "$name did not start"
done

q() { dig @127.0.0.1 -p "$BERTH_DEMO_DNS_PORT" +noall +answer "$@"; }
srvs() { q "_80._tcp.web.shop.$zone" SRV | grep -c SRV || true; }
echo "demo: waiting for web.shop.$zone"
for _ in $(seq 150); do [[ "$(srvs)" == 2 ]] && break; sleep 0.1; done
[[ "$(srvs)" == 2 ]] || fail exporter "did not publish both web.shop containers within 15 s"

echo; echo "\$ dig SRV _80._tcp.web.shop.$zone"; q "_80._tcp.web.shop.$zone" SRV
echo; echo "\$ dig A web.shop.$zone"; q "web.shop.$zone" A
echo; echo "\$ dig TXT berth-demo-web-1.demo-host.hosts.$zone"; q "berth-demo-web-1.demo-host.hosts.$zone" TXT
echo; echo "\$ dig PTR _http._tcp.$zone   (DNS-SD browsing)"; q "_http._tcp.$zone" PTR
for i in 1 2 3; do
  echo; echo "\$ curl --socks5-hostname 127.0.0.1:$BERTH_DEMO_SOCKS_PORT http://web.shop.$zone/"
  curl -sS --max-time 5 --socks5-hostname "127.0.0.1:$BERTH_DEMO_SOCKS_PORT" "http://web.shop.$zone/" ||
    fail proxy "could not fetch http://web.shop.$zone/ through SOCKS5"
done
echo; echo "\$ curl -x http://127.0.0.1:$BERTH_DEMO_HTTP_PORT http://web.shop.$zone/"
curl -sS --max-time 5 -x "http://127.0.0.1:$BERTH_DEMO_HTTP_PORT" "http://web.shop.$zone/" ||
  fail proxy "could not fetch http://web.shop.$zone/ as an HTTP proxy"

echo
echo "demo: stopping berth-demo-web-1; web.shop keeps answering from the other instance"
docker stop -t 1 berth-demo-web-1 >/dev/null
# The Corefile caches answers for 5 s (cache 5).
for _ in $(seq 150); do [[ "$(srvs)" == 1 ]] && break; sleep 0.1; done
q "_80._tcp.web.shop.$zone" SRV
curl -sS --max-time 5 --socks5-hostname "127.0.0.1:$BERTH_DEMO_SOCKS_PORT" "http://web.shop.$zone/" ||
  fail proxy "could not fetch http://web.shop.$zone/ from the remaining instance"

if [[ "${BERTH_DEMO_EXIT:-0}" == 1 ]]; then exit 0; fi
cat <<MSG

The demo keeps running. Everything is on this machine's loopback, which no real site publishes:
the exporter (--allow-loopback), the plugin (allow_loopback) and berth-proxy (--allow-loopback)
each opt in to it here. Ports (127.0.0.1; BERTH_DEMO_*_PORT change them): DNS $BERTH_DEMO_DNS_PORT,
CoreDNS metrics $BERTH_DEMO_METRICS_PORT, Consul $BERTH_DEMO_CONSUL_PORT, exporter $BERTH_DEMO_EXPORTER_PORT,
SOCKS5 $BERTH_DEMO_SOCKS_PORT, HTTP proxy $BERTH_DEMO_HTTP_PORT.

Try, from another shell:
  dig @127.0.0.1 -p $BERTH_DEMO_DNS_PORT _80._tcp.web.shop.$zone SRV
  docker run -d --rm -l berth.demo=$demo_id -l berth.service=api.shop -p 80 berth-demo-web
      # then: dig @127.0.0.1 -p $BERTH_DEMO_DNS_PORT _80._tcp.api.shop.$zone SRV
  curl --socks5-hostname 127.0.0.1:$BERTH_DEMO_SOCKS_PORT http://web.shop.$zone/
  curl -s http://127.0.0.1:$BERTH_DEMO_METRICS_PORT/metrics | grep coredns_berth
Logs are in $work. Ctrl-C stops everything and removes the containers labelled berth.demo=$demo_id.
MSG

# Until Ctrl-C, or until a part stops on its own.
exited=""
wait -n -p exited "${pids[@]}" || true
if [[ -n "$exited" ]]; then
  fail "${part_of[$exited]}" "stopped"
fi
