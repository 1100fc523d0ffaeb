# Shared by the .ci setup scripts (sourced, not run).

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "${0##*/}: need root for: $*" >&2
        exit 1
    fi
}

# apt-get install PKG... (errors only: postgres-setup's stdout is its URL).
# The package lists are updated first, once per .ci/run: it exports
# NATROUTE_APT_STAMP, an empty file that the first update marks; a script run
# on its own always updates.
apt_install() {
    if [ -z "${NATROUTE_APT_STAMP:-}" ] || [ ! -s "$NATROUTE_APT_STAMP" ]; then
        as_root apt-get update -qq >&2
        if [ -n "${NATROUTE_APT_STAMP:-}" ]; then echo updated >"$NATROUTE_APT_STAMP"; fi
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
