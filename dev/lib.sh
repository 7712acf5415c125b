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

# maven_jars NAME POM LIB [GOAL...]: copy the jars that POM depends on (Maven Central) into LIB by
# `mvn dependency:copy-dependencies`, plus whatever the extra GOALs copy there (e.g. dependency:copy
# for the pom's artifactItems). Installs java and mvn when missing. Copies again only when POM changed
# since the last copy; Maven's output (and the colour codes it prints even when quiet) goes to
# LIB/../install.log, shown only on failure.
maven_jars() {
  local name=$1 pom=$2 lib=$3 stamp log
  shift 3
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  stamp=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ "$(cat "$lib/.pom.sha256" 2>/dev/null)" = "$stamp" ]; then
    echo "$name: jars already in $lib"
    return 0
  fi
  rm -rf "$lib"
  mkdir -p "$lib"
  log="$(dirname "$lib")/install.log"
  mvn -q -B -f "$pom" dependency:copy-dependencies "$@" -DoutputDirectory="$lib" >"$log" 2>&1 || {
    cat "$log" >&2
    return 1
  }
  echo "$stamp" >"$lib/.pom.sha256"
  echo "$name: $(find "$lib" -name '*.jar' | wc -l) jars in $lib"
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
