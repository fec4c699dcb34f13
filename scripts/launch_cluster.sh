#!/usr/bin/env bash
# Start a Ray node for qd by hand (see docs/cluster.md).
#
#   scripts/launch_cluster.sh head [PORT [RAY_START_ARGS...]]            # on the head node (port 6379)
#   scripts/launch_cluster.sh worker HEAD_IP [PORT [RAY_START_ARGS...]]  # on every other node
#   scripts/launch_cluster.sh stop                   # take this node out
#
# Ray token authentication is on unless RAY_AUTH_MODE=disabled: the head creates the cluster's
# token (~/.ray/auth_token) if it has none, and every worker and driver must present the same
# token (the file ~/.ray/auth_token, a file named by RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN).
# Loads ~/qd.env (or $QD_ENV_FILE) first, so API keys and Ray settings come from the node's
# environment: Ray workers inherit the environment of `ray start`.
set -euo pipefail

env_file="${QD_ENV_FILE:-$HOME/qd.env}"
if [[ -f "$env_file" ]]; then
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
fi

# Token authentication by default; RAY_AUTH_MODE=disabled (in qd.env or the environment) opts out.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
# The dashboard (and its job API, port 8265) listens on this host only unless asked otherwise;
# reach it with `ray dashboard scripts/cluster.yaml` or an SSH tunnel.
dashboard_host="${QD_DASHBOARD_HOST:-127.0.0.1}"

have_token() {
    [[ -n "${RAY_AUTH_TOKEN:-}" ]] && return 0
    [[ -n "${RAY_AUTH_TOKEN_PATH:-}" && -s "${RAY_AUTH_TOKEN_PATH}" ]] && return 0
    [[ -s "$HOME/.ray/auth_token" ]]
}

check_auth() {
    if [[ "$RAY_AUTH_MODE" == "disabled" ]]; then
        echo "launch_cluster.sh: WARNING: RAY_AUTH_MODE=disabled: anyone who reaches this node's Ray ports" \
             "can run code with its environment (API keys included)" >&2
        return 0
    fi
    if ! have_token; then
        if [[ "$1" == "head" ]]; then
            (umask 077 && ray get-auth-token --generate >/dev/null)  # created mode 600, never readable by others
            echo "launch_cluster.sh: created the cluster token $HOME/.ray/auth_token" >&2
        else
            echo "launch_cluster.sh: no Ray auth token on this node: copy the head's ~/.ray/auth_token to" \
                 "$HOME/.ray/auth_token (chmod 600), or set RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH in $env_file" >&2
            exit 2
        fi
    fi
}

# Arguments after PORT go to `ray start` as they are (e.g. --node-ip-address IP, --block).
case "${1:-}" in
    head)
        port="${2:-6379}"
        shift $(( $# < 2 ? $# : 2 ))
        check_auth head
        ray start --head --port="$port" --dashboard-host="$dashboard_host" "$@"
        echo "join with: scripts/launch_cluster.sh worker $(hostname -I 2>/dev/null | awk '{print $1}') $port"
        if [[ "$RAY_AUTH_MODE" == "token" ]]; then
            echo "every worker (and any driver off this node) needs this node's ~/.ray/auth_token (chmod 600)"
        fi
        ;;
    worker)
        head="${2:?usage: launch_cluster.sh worker HEAD_IP [PORT]}"
        port="${3:-6379}"
        shift $(( $# < 3 ? $# : 3 ))
        check_auth worker
        ray start --address="$head:$port" "$@"
        ;;
    stop)
        ray stop
        ;;
    *)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
