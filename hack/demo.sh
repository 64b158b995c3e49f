#!/usr/bin/env bash
# The local demo: a Consul agent, CoreDNS with berth, the exporter watching
# this machine's Docker Engine, berth-proxy, and two instances of a small web
# service. It shows the DNS answers, reaches the service by name through the
# proxy with curl, then keeps everything running until Ctrl-C (or exits at
# once with BERTH_DEMO_EXIT=1). Run it through `make demo`, which builds
# bin/ and Consul first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

: "${BERTH_DEMO_DNS_PORT:=1053}"
: "${BERTH_DEMO_METRICS_PORT:=9153}"
: "${BERTH_DEMO_CONSUL_PORT:=8500}"
export BERTH_DEMO_DNS_PORT BERTH_DEMO_METRICS_PORT
zone=c.example.org
work="$(mktemp -d)"
pids=()
containers=()

cleanup() {
  echo "demo: cleaning up"
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

need() { command -v "$1" >/dev/null 2>&1; }
if ! need dig; then
  echo "demo: installing dig (bind9-dnsutils) from Debian"
  apt-get update -qq && apt-get install -y -qq bind9-dnsutils >/dev/null
fi
need docker || { echo "demo: needs the docker CLI and a running Docker Engine" >&2; exit 1; }
need curl || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

consul="$(bash hack/get-consul.sh)"
echo "demo: starting Consul on 127.0.0.1:$BERTH_DEMO_CONSUL_PORT"
"$consul" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$BERTH_DEMO_CONSUL_PORT" \
  -dns-port -1 -grpc-port -1 -hcl 'ports { grpc_tls = -1 }' -log-level warn >"$work/consul.log" 2>&1 &
pids+=($!)
export CONSUL_HTTP_ADDR="127.0.0.1:$BERTH_DEMO_CONSUL_PORT"
for _ in $(seq 100); do "$consul" kv put berth-demo/ready 1 >/dev/null 2>&1 && break; sleep 0.1; done

echo "demo: starting CoreDNS with berth on 127.0.0.1:$BERTH_DEMO_DNS_PORT"
bin/coredns -conf hack/demo.Corefile >"$work/coredns.log" 2>&1 &
pids+=($!)

echo "demo: starting berth-exporter on the local Docker Engine"
# The demo's world is this machine: its clients dial loopback, which the
# exporter publishes only with --allow-loopback.
bin/berth-exporter --node demo-host --advertise-addr 127.0.0.1 --allow-loopback --listen 127.0.0.1:9753 \
  >"$work/exporter.log" 2>&1 &
pids+=($!)

echo "demo: starting berth-proxy (SOCKS5 127.0.0.1:1080, HTTP 127.0.0.1:3128)"
bin/berth-proxy --socks 127.0.0.1:1080 --http 127.0.0.1:3128 \
  --dns "127.0.0.1:$BERTH_DEMO_DNS_PORT" --zones "$zone" >"$work/proxy.log" 2>&1 &
pids+=($!)

echo "demo: building the web service image (FROM scratch, a static Go binary)"
mkdir -p "$work/image"
CGO_ENABLED=0 go build -trimpath -o "$work/image/web" ./internal/testenv/testsvc
printf 'FROM scratch\nCOPY web /web\nEXPOSE 80\nENTRYPOINT ["/web"]\n' >"$work/image/Dockerfile"
docker build -q -t berth-demo-web "$work/image" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }

for i in 1 2; do
  name="berth-demo-web-$i"
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" -l berth.service=web.shop -l berth.port.80.name=http \
    -e TESTSVC_NAME="$name" -p 127.0.0.1::80 -p 80 berth-demo-web >/dev/null
  containers+=("$name")
done

q() { dig @127.0.0.1 -p "$BERTH_DEMO_DNS_PORT" +noall +answer "$@"; }
echo "demo: waiting for web.shop.$zone"
for _ in $(seq 100); do [ -n "$(q "_80._tcp.web.shop.$zone" SRV)" ] && break; sleep 0.1; done

echo; echo "\$ dig SRV _80._tcp.web.shop.$zone"; q "_80._tcp.web.shop.$zone" SRV
echo; echo "\$ dig A web.shop.$zone"; q "web.shop.$zone" A
echo; echo "\$ dig TXT berth-demo-web-1.demo-host.hosts.$zone"; q "berth-demo-web-1.demo-host.hosts.$zone" TXT
echo; echo "\$ dig PTR _http._tcp.$zone   (DNS-SD browsing)"; q "_http._tcp.$zone" PTR
for i in 1 2 3; do
  echo; echo "\$ curl --socks5-hostname 127.0.0.1:1080 http://web.shop.$zone/"
  curl -sS --max-time 5 --socks5-hostname 127.0.0.1:1080 "http://web.shop.$zone/"
done
echo; echo "\$ curl -x http://127.0.0.1:3128 http://web.shop.$zone/"
curl -sS --max-time 5 -x http://127.0.0.1:3128 "http://web.shop.$zone/"

echo
echo "demo: stopping berth-demo-web-1; web.shop keeps answering from the other instance"
docker stop -t 1 berth-demo-web-1 >/dev/null
for _ in $(seq 100); do [ "$(q "_80._tcp.web.shop.$zone" SRV | wc -l)" = 1 ] && break; sleep 0.1; done
q "_80._tcp.web.shop.$zone" SRV
curl -sS --max-time 5 --socks5-hostname 127.0.0.1:1080 "http://web.shop.$zone/"

if [ "${BERTH_DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
cat <<MSG

The demo keeps running. Try, from another shell:
  dig @127.0.0.1 -p $BERTH_DEMO_DNS_PORT _80._tcp.web.shop.$zone SRV
  docker run -d -l berth.service=api.shop -p 80 berth-demo-web   # then: dig ... api.shop.$zone SRV
  curl --socks5-hostname 127.0.0.1:1080 http://web.shop.$zone/
  curl http://127.0.0.1:$BERTH_DEMO_METRICS_PORT/metrics | grep coredns_berth
Logs are in $work. Ctrl-C stops everything.
MSG
wait
