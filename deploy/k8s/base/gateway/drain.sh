#!/usr/bin/env bash
# The gateway pod's preStop hook (docs/adr/0024): drains Envoy before Kubernetes stops it.
#
#   bash drain.sh --deadline-seconds N [--min-seconds 10] [--admin 127.0.0.1:9901]
#                 [--stat http.ingress_http.downstream_rq_active] [--interval 1]
#                 [--log /proc/1/fd/2]
#
# Envoy does not drain on SIGTERM: it closes its listeners and exits, resetting every
# request in flight. Kubernetes sends SIGTERM only once this hook returns, so the hook
#  1. POSTs /drain_listeners?graceful&inboundonly to the admin interface (loopback only):
#     the public listener (traffic_direction INBOUND) asks every connection to close
#     (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY; --drain-strategy immediate) and keeps
#     accepting until --drain-time-s; the ops listener (/ready, /stats/prometheus) is
#     left alone, so the probes and Prometheus still see the pod while it drains;
#  2. reads the public listener's gauge of requests in flight (--stat) every --interval
#     seconds and returns once it is 0 and --min-seconds have passed (the endpoint's
#     removal reaches kube-proxy and the load balancer meanwhile), or at
#     --deadline-seconds, derived from the longest route timeout (tests/deploy checks it).
#
# Exit status: 0 drained; 1 gave up at the deadline, could not start the drain (the
# requests in flight were waited for all the same) or found no Envoy to drain; 2 usage.
# Only bash and /dev/tcp: the Envoy image has no curl or wget. Messages go to Envoy's
# stderr (--log), so `kubectl logs` shows them next to Envoy's own.

set -u
export LC_ALL=C TZ=UTC
# A write to a socket Envoy closed must fail the request, not kill the hook.
trap '' PIPE

deadline="" min=10 interval=1 admin=127.0.0.1:9901
stat=http.ingress_http.downstream_rq_active log=/proc/1/fd/2
# Seconds one read from the admin interface may take.
read_timeout=5

usage() {
  printf 'usage: drain.sh --deadline-seconds N [--min-seconds N] [--admin HOST:PORT]\n' >&2
  printf '                [--stat NAME] [--interval SECONDS] [--log PATH]\n' >&2
  exit 2
}

while (($#)); do
  (($# >= 2)) || usage
  case $1 in
    --deadline-seconds) deadline=$2 ;;
    --min-seconds) min=$2 ;;
    --admin) admin=$2 ;;
    --stat) stat=$2 ;;
    --interval) interval=$2 ;;
    --log) log=$2 ;;
    *) usage ;;
  esac
  shift 2
done
[[ $deadline =~ ^[0-9]+$ && $min =~ ^[0-9]+$ && $interval =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage
[[ $admin =~ ^([^:]+):([0-9]+)$ ]] || usage
admin_host=${BASH_REMATCH[1]} admin_port=${BASH_REMATCH[2]}
[[ $stat =~ ^[A-Za-z0-9_.]+$ ]] || usage

# Envoy's stderr when this runs in its container (PID 1 is envoy), else our own.
if ! [[ -w $log ]] || ! exec {log_fd}>>"$log"; then
  exec {log_fd}>&2
fi

say() {
  printf '%(%Y-%m-%dT%H:%M:%SZ)T envoy-drain: %s\n' -1 "$*" >&"$log_fd"
}

# http METHOD PATH: one HTTP/1.1 request to the admin interface. Sets `status` and `body`
# (Content-Length, chunked or until close). Returns 2 when nothing answers on the admin
# port (no Envoy), 1 when the answer is cut short or malformed, 0 otherwise.
http() {
  local method=$1 path=$2 line name value length="" chunked="" size chunk fd
  status="" body=""
  { exec {fd}<>"/dev/tcp/${admin_host}/${admin_port}"; } 2>/dev/null || return 2
  { printf '%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' \
    "$method" "$path" "$admin" >&"$fd"; } 2>/dev/null || { exec {fd}>&-; return 1; }
  if ! IFS= read -r -t "$read_timeout" line <&"$fd" ||
    ! [[ ${line%$'\r'} =~ ^HTTP/1\.[01]\ ([0-9]{3}) ]]; then
    exec {fd}>&-
    return 1
  fi
  status=${BASH_REMATCH[1]}
  while IFS= read -r -t "$read_timeout" line <&"$fd"; do
    line=${line%$'\r'}
    [[ -z $line ]] && break
    name=${line%%:*} value=${line#*:}
    value=${value#"${value%%[! ]*}"}
    case ${name,,} in
      content-length) length=$value ;;
      transfer-encoding) [[ ${value,,} == *chunked* ]] && chunked=1 ;;
    esac
  done
  if [[ -n $chunked ]]; then
    while IFS= read -r -t "$read_timeout" line <&"$fd"; do
      line=${line%$'\r'}
      [[ $line =~ ^([0-9a-fA-F]+) ]] || { exec {fd}>&-; return 1; }
      size=$((16#${BASH_REMATCH[1]}))
      ((size == 0)) && break
      IFS= read -r -N "$size" -t "$read_timeout" chunk <&"$fd" || { exec {fd}>&-; return 1; }
      body+=$chunk
      IFS= read -r -t "$read_timeout" line <&"$fd" # the CRLF that ends the chunk
    done
  elif [[ $length =~ ^[0-9]+$ ]]; then
    if ((length > 0)) && ! IFS= read -r -N "$length" -t "$read_timeout" body <&"$fd"; then
      exec {fd}>&-
      return 1
    fi
  else
    while IFS= read -r -t "$read_timeout" line <&"$fd" || [[ -n $line ]]; do
      body+=$line$'\n'
    done
  fi
  exec {fd}>&-
  return 0
}

# active: the gauge's value from /stats, or nothing when it cannot be read.
active() {
  local line pattern="^${stat//./\\.}: ([0-9]+)$"
  http GET "/stats?filter=${stat}" || return $?
  [[ $status == 200 ]] || return 1
  while IFS= read -r line; do
    line=${line%$'\r'}
    if [[ $line =~ $pattern ]]; then
      printf '%s' "${BASH_REMATCH[1]}"
      return 0
    fi
  done <<<"$body"
  return 1
}

outcome=0 reported=0
say "draining: POST /drain_listeners?graceful&inboundonly; waiting for $stat to reach 0" \
  "(at least ${min}s, at most ${deadline}s)"
http POST "/drain_listeners?graceful&inboundonly"
case $? in
  0)
    if [[ $status == 200 ]]; then
      say "drain started"
    else
      say "Envoy refused the drain (HTTP $status: ${body%%$'\n'*}); waiting for the requests in flight anyway"
      outcome=1
    fi
    ;;
  2)
    say "nothing answers on $admin: no Envoy to drain"
    exit 1
    ;;
  *)
    say "no answer to the drain request; waiting for the requests in flight anyway"
    outcome=1
    ;;
esac

while :; do
  count=$(active)
  case $? in
    0) ;;
    2)
      say "Envoy's admin interface went away after ${SECONDS}s: nothing left to drain"
      exit 1
      ;;
    *) count="" ;;
  esac
  if [[ $count == 0 ]] && ((SECONDS >= min)); then
    say "drained after ${SECONDS}s: no request in flight"
    exit "$outcome"
  fi
  if ((SECONDS >= deadline)); then
    say "gave up after ${SECONDS}s with ${count:-an unknown number of} requests in flight"
    exit 1
  fi
  if ((SECONDS - reported >= 30)); then
    say "${count:-an unknown number of} requests in flight after ${SECONDS}s"
    reported=$SECONDS
  fi
  sleep "$interval"
done
