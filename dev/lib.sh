# Helpers shared by dev/<name>/service scripts. Source it; THREADCAST_RUN_DIR is set by dev/services.
RUN_DIR="${THREADCAST_RUN_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.run}"

# apt_install PKG...: install Debian packages that are missing (apt-get update once per run).
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# wait_port PORT SECONDS NAME: wait until 127.0.0.1:PORT accepts connections, or fail.
wait_port() {
  local port=$1 secs=$2 name=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not answer on 127.0.0.1:$port within ${secs}s" >&2
  return 1
}

# pid_alive PIDFILE: the recorded process is running.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid PIDFILE NAME: TERM the recorded process, wait, then KILL.
stop_pid() {
  local pidfile=$1 name=$2 pid i
  pid_alive "$pidfile" || { rm -f "$pidfile"; echo "$name: not running"; return 0; }
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "$name: stopped"
}

# status_line PIDFILE NAME DETAIL
status_line() {
  if pid_alive "$1"; then echo "$2: running (pid $(cat "$1")) $3"; else echo "$2: stopped"; fi
}
