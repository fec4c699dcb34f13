#!/usr/bin/env bash
# Start a Ray node for qd by hand (see docs/cluster.md).
#
#   scripts/launch_cluster.sh head [PORT]            # on the head node (default port 6379)
#   scripts/launch_cluster.sh worker HEAD_IP [PORT]  # on every other node
#   scripts/launch_cluster.sh stop                   # take this node out
#
# Loads ~/qd.env (or $QD_ENV_FILE) first, so API keys and RAY_AUTH_MODE come from the
# node's environment: Ray workers inherit the environment of `ray start`.
set -euo pipefail

env_file="${QD_ENV_FILE:-$HOME/qd.env}"
if [[ -f "$env_file" ]]; then
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
fi

case "${1:-}" in
    head)
        port="${2:-6379}"
        ray start --head --port="$port" --dashboard-host=0.0.0.0
        echo "join with: scripts/launch_cluster.sh worker $(hostname -I 2>/dev/null | awk '{print $1}') $port"
        ;;
    worker)
        head="${2:?usage: launch_cluster.sh worker HEAD_IP [PORT]}"
        port="${3:-6379}"
        ray start --address="$head:$port"
        ;;
    stop)
        ray stop
        ;;
    *)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
