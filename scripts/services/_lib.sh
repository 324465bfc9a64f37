# shellcheck shell=bash
# Shared helpers for scripts/services/*. Sourced, never executed.
#
# Conventions used by every service script:
#   state dir : ${OFS_SERVICES_DIR:-<repo root>/.services}/<name>
#   cache dir : ${OFS_CACHE_DIR:-$HOME/.cache/online-feature-store}
#   pid files : <state dir>/<something>.pid, holding the PID the script started
#   timeouts  : OFS_<SERVICE>_START_TIMEOUT, else OFS_START_TIMEOUT, else the
#               script's default (60 s redis/etcd, 90 s clusters, 120 s kafka)
#   stop      : TERM, wait OFS_STOP_TIMEOUT (20 s; kafka 30 s), then KILL
#
# Processes are started with setsid + nohup, stdin from /dev/null and
# stdout/stderr to a log file, so a caller capturing the script's output
# (e.g. `out=$(scripts/services/redis start)`) never hangs on an inherited pipe.

OFS_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OFS_REPO_ROOT="$(cd "$OFS_LIB_DIR/../.." && pwd)"
OFS_SERVICES_DIR="${OFS_SERVICES_DIR:-$OFS_REPO_ROOT/.services}"
OFS_CACHE_DIR="${OFS_CACHE_DIR:-${HOME:-/root}/.cache/online-feature-store}"
# make both absolute: they end up in generated config files
case "$OFS_SERVICES_DIR" in /*) ;; *) OFS_SERVICES_DIR="$PWD/$OFS_SERVICES_DIR" ;; esac
case "$OFS_CACHE_DIR" in /*) ;; *) OFS_CACHE_DIR="$PWD/$OFS_CACHE_DIR" ;; esac
OFS_HOST=127.0.0.1

ofs_log() { printf '[%s] %s\n' "${OFS_SERVICE_NAME:-services}" "$*" >&2; }
ofs_die() { ofs_log "ERROR: $*"; exit 1; }

# ofs_lock STATE_DIR : serialize the mutating subcommands (install, start,
# stop, reset, ...) of one service across concurrent callers. Also drops a
# `*` .gitignore into $OFS_SERVICES_DIR so state never shows up in git.
ofs_lock() {
  mkdir -p "$1"
  [ -f "$OFS_SERVICES_DIR/.gitignore" ] || printf '*\n' >"$OFS_SERVICES_DIR/.gitignore"
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$1/.lock"
  flock -w "${OFS_LOCK_TIMEOUT:-600}" 9 || ofs_die "could not lock $1 (another start/stop still running?)"
}

# ofs_need_cmd CMD HINT
ofs_need_cmd() {
  command -v "$1" >/dev/null 2>&1 || ofs_die "'$1' not found; run: $2"
}

# ofs_apt_install PKG... : apt-get install; runs `apt-get update` first when
# the package lists are empty (fresh machine), and once more on failure
# (stale lists).
ofs_apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || ofs_die "need root (or sudo) to apt-get install $*"
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  # wait for a concurrent apt/dpkg (another service script) instead of failing
  local lockopt=(-o DPkg::Lock::Timeout=300)
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    $sudo apt-get "${lockopt[@]}" update -q
  fi
  if ! $sudo apt-get "${lockopt[@]}" install -y -q "$@"; then
    ofs_log "apt-get install failed; running apt-get update and retrying"
    $sudo apt-get "${lockopt[@]}" update -q
    $sudo apt-get "${lockopt[@]}" install -y -q "$@"
  fi
}

# ofs_pid_read PIDFILE -> prints the pid, or nothing.
ofs_pid_read() {
  [ -f "$1" ] || return 0
  local p
  p="$(tr -dc '0-9' <"$1" 2>/dev/null || true)"
  [ -n "$p" ] && printf '%s\n' "$p"
  return 0
}

# ofs_pid_alive PIDFILE [PATTERN] -> 0 if the pid in PIDFILE is alive and (if
# given) its command line contains PATTERN (guards against PID reuse).
ofs_pid_alive() {
  local pidfile="$1" pattern="${2:-}" pid cmd
  pid="$(ofs_pid_read "$pidfile")"
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # a zombie is not alive
  if [ -r "/proc/$pid/stat" ]; then
    local st
    st="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [ "$st" = "Z" ] && return 1
  fi
  if [ -n "$pattern" ] && [ -r "/proc/$pid/cmdline" ]; then
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    case "$cmd" in *"$pattern"*) ;; *) return 1 ;; esac
  fi
  return 0
}

# ofs_spawn PIDFILE LOGFILE CMD... : start CMD detached, write its pid.
ofs_spawn() {
  local pidfile="$1" logfile="$2"
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  # In a non-interactive shell the background child is not a process-group
  # leader, so setsid(1) calls setsid() and execs in place: $! is the real PID.
  # fd 9 (the ofs_lock lock) is closed so the server does not hold the lock.
  setsid nohup "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  local pid=$!
  printf '%s\n' "$pid" >"$pidfile"
}

# ofs_stop_pidfile PIDFILE [PATTERN] [GRACE_SECONDS]
# TERM the pid, wait up to GRACE seconds, then KILL; always removes PIDFILE.
ofs_stop_pidfile() {
  local pidfile="$1" pattern="${2:-}" grace="${3:-${OFS_STOP_TIMEOUT:-20}}" pid i
  pid="$(ofs_pid_read "$pidfile")"
  if [ -z "$pid" ]; then
    rm -f "$pidfile"
    return 0
  fi
  if ofs_pid_alive "$pidfile" "$pattern"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      ofs_pid_alive "$pidfile" "$pattern" || break
      sleep 0.1
    done
    if ofs_pid_alive "$pidfile" "$pattern"; then
      ofs_log "pid $pid did not exit after ${grace}s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        ofs_pid_alive "$pidfile" "$pattern" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$pidfile"
}

# ofs_port_open PORT -> 0 if something accepts TCP connections on 127.0.0.1:PORT
ofs_port_open() {
  (exec 3<>"/dev/tcp/$OFS_HOST/$1") 2>/dev/null
}

# ofs_port_free_or_die PORT : die if PORT is already taken (by a process that
# is not ours), so we never report someone else's server as ours.
ofs_port_free_or_die() {
  local port="$1"
  if ofs_port_open "$port"; then
    ofs_die "port $OFS_HOST:$port is already in use by another process (not started by this script)"
  fi
}

# ofs_wait_until TIMEOUT PIDFILE PATTERN LOGFILE DESCRIPTION CHECK_CMD...
# Polls CHECK_CMD until it succeeds. Fails early if the process dies (PATTERN is not checked here:
# see below; CHECK_CMD, usually `healthy`, checks it).
# On failure prints the last 50 log lines and returns 1.
ofs_wait_until() {
  local timeout="$1" pidfile="$2" logfile="$4" what="$5"
  shift 5
  local deadline=$((SECONDS + timeout))
  while :; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    # Alive, whatever its command line: the process was spawned moments ago, and until its fork has
    # exec'd (late on a loaded machine) /proc shows the spawning shell's command line, not the pattern.
    if [ -n "$pidfile" ] && ! ofs_pid_alive "$pidfile"; then
      ofs_log "process for $what exited before becoming ready"
      ofs_tail_log "$logfile"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      ofs_log "timed out after ${timeout}s waiting for $what"
      ofs_tail_log "$logfile"
      return 1
    fi
    sleep 0.3
  done
}

ofs_tail_log() {
  local f="$1"
  if [ -f "$f" ]; then
    echo "----- last 50 lines of $f -----" >&2
    tail -n 50 "$f" >&2 || true
    echo "----- end of $f -----" >&2
  else
    echo "(no log file $f)" >&2
  fi
}

# ofs_usage NAME SUBCOMMANDS
ofs_usage() {
  echo "usage: $1 {$2}" >&2
  exit 2
}
