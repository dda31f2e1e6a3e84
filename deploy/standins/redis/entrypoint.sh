#!/bin/sh
# redis:7's entrypoint, as much as compose.yaml uses: redis-server (options passed on) as user redis, with
# protected mode off as the official image builds it (else clients on the network are refused).
set -eu
case "${1:-}" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
  if [ "$(id -u)" = 0 ]; then
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
