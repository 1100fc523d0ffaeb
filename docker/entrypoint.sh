#!/bin/sh
# Entrypoint of the natroute images. Runs as root only for network set-up, then
# drops to the unprivileged user natroute (uid 10001) without capabilities.
#   DEFAULT_ROUTE=ADDR|NAME    route everything via this gateway (a NAT router's LAN
#                              address or its name); needs cap NET_ADMIN
#   NATROUTE_RUN_AS_ROOT=1     keep root (debugging only)
set -eu

if [ -n "${DEFAULT_ROUTE:-}" ]; then
    gateway=$DEFAULT_ROUTE
    case $gateway in
    *[!0-9.]*)
        # A name: wait (bounded) until the gateway container is resolvable.
        i=0
        until gateway=$(getent ahostsv4 "$DEFAULT_ROUTE" | awk 'NR == 1 { print $1 }') && [ -n "$gateway" ]; do
            i=$((i + 1))
            [ "$i" -le 50 ] || { echo "natroute-entrypoint: cannot resolve $DEFAULT_ROUTE" >&2; exit 1; }
            sleep 0.2
        done
        ;;
    esac
    if ! ip route replace default via "$gateway"; then
        echo "natroute-entrypoint: cannot set default route via $gateway (needs cap NET_ADMIN and root)" >&2
        exit 1
    fi
fi

if [ "$(id -u)" = 0 ] && [ "${NATROUTE_RUN_AS_ROOT:-0}" != 1 ]; then
    exec setpriv --reuid=natroute --regid=natroute --init-groups \
        --inh-caps=-all --bounding-set=-all -- "$@"
fi
exec "$@"
