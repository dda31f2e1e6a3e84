#!/usr/bin/env bash
# Install, run, upgrade and uninstall the Windows installer under Wine, against a Linux server.
#
#   POSPAL_SMOKE_SERVER_DIR=DIR scripts/windows_smoke.sh SETUP_V1.exe SETUP_V2.exe
#
# DIR holds the server whose public key the bundle was built with (scripts/windows_ci.sh makes both).
# Every check fails the script (no warn-and-skip):
#  1. Setup.exe /S: files in Program Files, both Start menu shortcuts, the HKLM Run value starting only the
#     tray (`run --tray-only`), the Add/Remove Programs keys, and the service POSPalAgent registered
#     (automatic start, `pospal-agent.exe service run`, NT SERVICE\POSPalAgent) and started by Setup,
#     running the update launcher over %ProgramData%\POSPal\install seeded from Program Files;
#  2. boot: the prefix stopped (`wineserver -k`), then `wineboot` alone: Wine's services.exe starts the
#     service by itself (Wine's boot is also its login, so the HKLM Run value starts the tray, which
#     never holds the port); the time from boot to the first GET /v1/license answer
#     is printed (windows-figure: boot-answer-ms);
#  3. pospal-agent.exe trial, then status --json, against a Linux server (sandbox billing): trial_active;
#  4. a kill of the service's process (its agent child must end with it): Wine 8's services.exe runs no
#     recovery actions (see below), so this shows how far it goes (the SCM's restart is covered by tests/agent/test_winservice.py), then boots
#     again and checks the license survived the kill;
#  5. `service stop`: the process ends and the port is released; `service start`: it answers again;
#  6. SETUP_V2 /S over the running service: the version changes, the service is stopped, replaced and
#     started, and still says trial_active with the same machine id;
#  7. Uninstall.exe /S: the service, files, launcher install, Run value, shortcuts and uninstall keys gone,
#     license data kept;
#  8. reinstall, then Uninstall.exe /S /REMOVEDATA: the license data is gone too;
#  9. (POSPAL_SMOKE_UPDATE_REPO, from scripts/windows_ci.sh) install again, start a trial, and have the
#     service apply a signed update (a real build of the next version, from a TUF repository) while a POS
#     asks GET /v1/license every 10 ms: 0 failed, the longest wait printed, the same license state and
#     machine id after; then uninstall, which removes the staged version too.
# Under Wine a prefix whose only processes are system ones and services shuts down (its services are
# killed, without SHUTDOWN): a Windows PC does not. So an idle Windows process (a sleeping python.exe, no
# POSPal code, no tray) stands for the PC staying up between steps; it is idle, and the service is
# started by services.exe alone.
# The service reads its settings from the system environment (as on Windows, where services get no
# user's environment): POSPAL_AGENT_PORT (a free port, so a developer's own agent on 7421 is left alone)
# and POSPAL_SERVER_URL go into HKLM's Session Manager\Environment for this run, and out again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# shellcheck source=scripts/windows_env.sh
source scripts/windows_env.sh
SETUP1="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
SETUP2="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"

WORK="$(mktemp -d)"
SERVER_PID=""
REPO_PID=""
POS_PID=""
cleanup() {
  # Only what this script started: the Linux server, update repository and POS by their pids, and this
  # dedicated prefix's wineserver.
  [ -n "$POS_PID" ] && kill "$POS_PID" 2>/dev/null || true
  [ -n "$REPO_PID" ] && kill "$REPO_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  wineserver -k 2>/dev/null || true
  [ -n "$SERVER_PID" ] && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -30 "$f"; }; done >&2; exit 1; }
ok() { echo "ok: $*"; }

free_port() { "$LINUX_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

C="$WINEPREFIX/drive_c"
INSTDIR="$C/Program Files/POSPal License Agent"
WIN_INSTDIR='C:\Program Files\POSPal License Agent'
MENU="$C/ProgramData/Microsoft/Windows/Start Menu/Programs/POSPal License Agent"
RUN_KEY='HKLM\Software\Microsoft\Windows\CurrentVersion\Run'
UNINSTALL_KEY='HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall\POSPalLicenseAgent'
# Where the license data may live: per machine (%ProgramData%\POSPal), or per user in older versions.
DATA_DIRS=("$C/ProgramData/POSPal" "$C/users/$(id -un)/AppData/Local/POSPal/POSPal License Agent")

reg_value() { wine_run reg query "$1" /v "$2" /reg:64 2>/dev/null | tr -d '\r' | awk -v v="$2" '$1 == v {sub(/^[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t]+/, ""); print}'; }
license_data_present() { local d; for d in "${DATA_DIRS[@]}"; do [ -n "$(ls -A "$d" 2>/dev/null)" ] && return 0; done; return 1; }
# The whole prefix quiet (an uninstaller relaunches itself from %TEMP% and returns at once), bounded.
prefix_idle() { timeout "${1:-120}" wineserver -w || fail "Windows processes still running after ${1:-120} s"; }

# --- a Linux server with sandbox billing (as scripts/demo.sh starts it) ---------------------------
# The bundle trusts only the keys it was built with, so the server is the one whose public key
# scripts/windows_ci.sh built into it (POSPAL_SMOKE_SERVER_DIR, made by `windows_server_prepare`).
SERVER_DIR="${POSPAL_SMOKE_SERVER_DIR:?set POSPAL_SMOKE_SERVER_DIR (see scripts/windows_ci.sh)}"
windows_server_env "$SERVER_DIR"
SERVER_PORT="$(free_port)"
export POSPAL_PUBLIC_URL="http://127.0.0.1:$SERVER_PORT"
BIN="$ROOT/.venv/bin"
"$BIN/pospal-server" run --host 127.0.0.1 --port "$SERVER_PORT" >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do curl -fsS -o /dev/null "$POSPAL_PUBLIC_URL/health" 2>/dev/null && break; sleep 0.2; done
curl -fsS -o /dev/null "$POSPAL_PUBLIC_URL/health" || fail "the server did not start"

# The Windows processes inherit these (Wine passes the Linux environment through); the service gets them
# from the system environment, like any Windows service.
AGENT_PORT="$(free_port)"
export POSPAL_AGENT_PORT="$AGENT_PORT" POSPAL_SERVER_URL="$POSPAL_PUBLIC_URL"
unset POSPAL_DATA_DIR POSPAL_TRUSTED_KEYS
AGENT_URL="http://127.0.0.1:$AGENT_PORT"
SYSENV='HKLM\System\CurrentControlSet\Control\Session Manager\Environment'
SERVICE_KEY='HKLM\System\CurrentControlSet\Services\POSPalAgent'

# A clean slate: nothing left from an earlier run in this prefix.
wineserver -k 2>/dev/null || true
[ -f "$INSTDIR/Uninstall.exe" ] && { wine_run "$INSTDIR/Uninstall.exe" /S /REMOVEDATA >/dev/null || true; prefix_idle; }
rm -rf "${DATA_DIRS[@]}" "$INSTDIR"
wine_run reg add "$SYSENV" /v POSPAL_AGENT_PORT /d "$AGENT_PORT" /f >/dev/null
wine_run reg add "$SYSENV" /v POSPAL_SERVER_URL /d "$POSPAL_PUBLIC_URL" /f >/dev/null
wineserver -w
# Only this prefix's variables (the trap's cleanup runs this too).
unset_sysenv() {
  local v
  for v in POSPAL_AGENT_PORT POSPAL_SERVER_URL POSPAL_UPDATE_URL POSPAL_UPDATE_IDLE_S POSPAL_UPDATE_WINDOW \
      POSPAL_UPDATE_FIRST_CHECK_S; do
    wine_run reg delete "$SYSENV" /v "$v" /f >/dev/null 2>&1 || true
  done
}
trap 'unset_sysenv; cleanup' EXIT

KEEPER_MARK="pospal-smoke-keeper"
# Started first, and it opens the SCM, so that the prefix's wineserver and services.exe (which Wine starts
# on the first SCM call) inherit its output, not that of a command whose pipe this script then waits on:
# they would hold that open for as long as the prefix runs.
keeper_start() {
  (winpy -c "import time, win32service; win32service.OpenSCManager(None, None, 1); time.sleep(900)  # $KEEPER_MARK" \
     >/dev/null 2>&1) &
  for _ in $(seq 300); do pgrep -f "$KEEPER_MARK" >/dev/null && pgrep -f 'system32.services.exe' >/dev/null && return 0; sleep 0.1; done
  fail "the idle Windows process did not start"
}
keeper_stop() {  # by its pid: only the process this script started
  local pid
  for pid in $(pgrep -f "$KEEPER_MARK" || true); do kill "$pid" 2>/dev/null || true; done
}
service_pid() { pgrep -f 'pospal-agent.exe service run' || true; }
tray_running() { pgrep -f 'POSPalLicenseAgent\.exe' >/dev/null; }
wait_license() {  # prints the ms to the first answer with a license_state
  local t0 i body
  t0=$(now_ms)
  for i in $(seq 600); do
    body="$(curl -fsS --max-time 2 "$AGENT_URL/v1/license" 2>/dev/null)" && echo "$body" | grep -q license_state && {
      echo $(( $(now_ms) - t0 )); return 0; }
    sleep 0.1
  done
  return 1
}
port_closed() { ! curl -fsS --max-time 2 -o /dev/null "$AGENT_URL/v1/license" 2>/dev/null; }
# A boot of the prefix with nothing else running: Wine's services.exe starts the automatic services.
# (The service's own process keeps the prefix up; without one, Wine ends services.exe too.)
boot() {
  wineserver -k 2>/dev/null || true
  timeout 60 wineserver -w 2>/dev/null || true
  BOOT_T0=$(now_ms)
  (wine wineboot </dev/null 2>&1 | cat >>"$WORK/boot.log") &
  # At once: once wineboot ends with only system processes left, Wine would end them and the service.
  keeper_start
}
fail_logs() { for f in "$DATA"/agent.log "$DATA"/service.log; do [ -f "$f" ] && { echo "--- $f"; tail -30 "$f"; }; done >&2; }
DATA="$C/ProgramData/POSPal/License Agent"
LAUNCH="$C/ProgramData/POSPal/install"

# --- 1. install -----------------------------------------------------------------------------------
keeper_start
t0=$(now_ms)
wine_run "$SETUP1" /S >"$WORK/setup1.log" || { fail_logs; fail "Setup.exe /S exited non-zero"; }
ok "installed in $(( ($(now_ms) - t0) / 1000 )) s"
for f in POSPalLicenseAgent.exe pospal-agent.exe Uninstall.exe EULA.txt _internal; do
  [ -e "$INSTDIR/$f" ] || fail "$f is not in Program Files"
done
for f in "POSPal License Agent.lnk" "Uninstall POSPal License Agent.lnk"; do
  [ -f "$MENU/$f" ] || fail "Start menu shortcut missing: $f"
done
run_value="$(reg_value "$RUN_KEY" POSPalLicenseAgent)"
[ "$run_value" = "\"$WIN_INSTDIR\\POSPalLicenseAgent.exe\" run --tray-only" ] || fail "HKLM Run value is [$run_value]"
[ "$(reg_value "$UNINSTALL_KEY" QuietUninstallString)" = "\"$WIN_INSTDIR\\Uninstall.exe\" /S" ] || fail "no QuietUninstallString"
if [ -n "${POSPAL_VERIFY_CA:-}" ]; then  # the uninstaller was signed while makensis wrote it
  osslsigncode verify -CAfile "$POSPAL_VERIFY_CA" -in "$INSTDIR/Uninstall.exe" >/dev/null || fail "Uninstall.exe is not signed"
fi
v1="$(reg_value "$UNINSTALL_KEY" DisplayVersion)"
[ -n "$v1" ] || fail "no DisplayVersion"
[ "$(reg_value "$SERVICE_KEY" ImagePath)" = "\"$WIN_INSTDIR\\pospal-agent.exe\" service run" ] \
  || fail "service ImagePath is [$(reg_value "$SERVICE_KEY" ImagePath)]"
[ "$(reg_value "$SERVICE_KEY" Start)" = 0x2 ] || fail "the service is not automatic start"
[ "$(reg_value "$SERVICE_KEY" ObjectName)" = 'NT SERVICE\POSPalAgent' ] || fail "service account [$(reg_value "$SERVICE_KEY" ObjectName)]"
ok "files, shortcuts, tray-only Run value, uninstall keys, service POSPalAgent (automatic, NT SERVICE\\POSPalAgent) (version $v1)"
ms="$(wait_license)" || { fail_logs; fail "the service Setup started did not answer GET /v1/license"; }
[ -n "$(service_pid)" ] || fail "something answers, but not the installed service"
ok "Setup started the service: it answers GET /v1/license"
# The service is the update launcher (agent.host.winservice.run_core): the install under ProgramData
# seeded from Program Files' pospal-agent.exe, and the agent it runs as its own process.
running_version() { curl -fsS --max-time 2 "$AGENT_URL/v1/health" | "$LINUX_PY" -c 'import json,sys; print(json.load(sys.stdin)["version"])'; }
agent_child() { pgrep -f 'pospal-agent.exe run --headless' || true; }
seeded_from() { "$LINUX_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[0])' "$LAUNCH/versions/$1/seeded-from"; }
ver="$(running_version)" || fail "no /v1/health answer"
[ "$(tr -d '\r\n' <"$LAUNCH/current")" = "$ver" ] || fail "the launcher's current is [$(cat "$LAUNCH/current" 2>/dev/null)], the agent says $ver"
[ "$(seeded_from "$ver")" = "$WIN_INSTDIR\pospal-agent.exe" ] || fail "version $ver is seeded from [$(seeded_from "$ver")]"
[ -n "$(agent_child)" ] || fail "no 'pospal-agent.exe run --headless' under the service"
ok "the service runs the launcher: $ver current in ProgramData\POSPal\install, seeded from Program Files, its agent a child process"

# --- 2. the service starts with the boot, with no user process ------------------------------------
boot
wait_license >/dev/null || { fail_logs; fail "after wineboot the service did not answer GET /v1/license within 60 s"; }
ms=$(( $(now_ms) - BOOT_T0 ))
echo "windows-figure: boot-answer-ms=$ms"
[ -n "$(service_pid)" ] || fail "no service process after the boot"
# wineboot is also Wine's login: it runs the HKLM Run entries, so the tray (`run --tray-only`) starts too;
# never a whole per-user agent.
if tray_running; then
  pgrep -af 'POSPalLicenseAgent\.exe' | grep -qv -- '--tray-only' && fail "a whole agent, not only the tray, started at login"
fi
ok "boot: services.exe started the service by itself (Wine's login started only the tray, which serves no port)"
[ "$ms" -le 3000 ] && ok "after wineboot alone the service answered in $ms ms (within 3 s)" \
  || echo "note: after wineboot alone the service answered in $ms ms (over 3 s on this busy machine)"

# --- 3. trial and status through the console twin --------------------------------------------------
cli() { wine_run "$INSTDIR/pospal-agent.exe" "$@"; }
cli trial >"$WORK/trial.log" || { fail_logs; fail "pospal-agent.exe trial exited non-zero"; }
cli status --json >"$WORK/status.json" || fail "pospal-agent.exe status --json exited non-zero"
field() { "$LINUX_PY" -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("{"):]).get(sys.argv[1]))' "$1"; }
[ "$(field license_state <"$WORK/status.json")" = trial_active ] || fail "status --json: $(cat "$WORK/status.json")"
machine1="$(field machine_id <"$WORK/status.json")"
license_data_present || fail "no license data on disk after the trial"
ok "pospal-agent.exe trial; status --json: trial_active (machine $machine1)"

# --- 4. a kill of the service's process ------------------------------------------------------------
pid="$(service_pid)"
[ -n "$pid" ] || fail "no service process to kill"
child="$(agent_child)"
kill -9 $pid
t0=$(now_ms)
# The agent is in the launcher's kill-on-close job (agent.selfupdate.handoff): it ends with it, so no
# orphan keeps the shared port from the next start.
for _ in $(seq 100); do [ -z "$(agent_child)" ] && break; sleep 0.1; done
[ -z "$(agent_child)" ] || fail "the agent (pid $child) outlived its killed launcher"
ok "the service's agent ended with its killed launcher (job object)"
restarted=""
for _ in $(seq 150); do
  sleep 0.1
  new="$(service_pid)"
  [ -n "$new" ] && [ "$new" != "$pid" ] && { restarted=$(( $(now_ms) - t0 )); break; }
done
if [ -n "$restarted" ]; then
  ms="$(wait_license)" || fail "the restarted service does not answer"
  echo "windows-figure: kill-restart-answer-ms=$(( restarted + ms ))"
  ok "the SCM restarted the killed service: answering $(( restarted + ms )) ms after the kill"
else
  echo "note: Wine 8's services.exe applies no recovery actions (its QueryServiceConfig2 knows no"
  echo "      FAILURE_ACTIONS level): the killed service was not restarted within 15 s. The restart is"
  echo "      Windows' (configured by service install: restart after 2 s, 2 s, 10 s); the exit it reacts to"
  echo "      is tested with a fake SCM (tests/agent/test_winservice.py)."
  echo "windows-figure: kill-restart-answer-ms=n/a-under-wine"
fi
boot
wait_license >/dev/null || { fail_logs; fail "the service did not come back with the next boot"; }
cli status --json >"$WORK/status-kill.json" || fail "status after the kill"
[ "$(field license_state <"$WORK/status-kill.json")" = trial_active ] || fail "after the kill: $(cat "$WORK/status-kill.json")"
ok "after the kill and a boot: still trial_active"

# --- 5. a clean stop, then a start -----------------------------------------------------------------
cli service stop >"$WORK/stop.log" || { cat "$WORK/stop.log"; fail "pospal-agent.exe service stop exited non-zero"; }
for _ in $(seq 100); do [ -z "$(service_pid)" ] && break; sleep 0.1; done
[ -z "$(service_pid)" ] || fail "the service process still runs after service stop"
port_closed || fail "the port still answers after service stop"
grep -q "service stopped" "$DATA/service.log" || fail "service.log does not say the service stopped"
ok "service stop: the process ended and the port is free"
t0=$(now_ms)
cli service start >"$WORK/start.log" || { cat "$WORK/start.log"; fail_logs; fail "pospal-agent.exe service start exited non-zero"; }
ms="$(wait_license)" || fail "the started service does not answer"
echo "windows-figure: service-start-answer-ms=$(( $(now_ms) - t0 ))"
ok "service start: answering $(( $(now_ms) - t0 )) ms after the start command"

# --- 6. upgrade over the running service ------------------------------------------------------------
old_pid="$(service_pid)"
wine_run "$SETUP2" /S >"$WORK/setup2.log" || { fail_logs; fail "the upgrade's Setup.exe /S exited non-zero"; }
v2="$(reg_value "$UNINSTALL_KEY" DisplayVersion)"
[ "$v2" != "$v1" ] || fail "DisplayVersion still $v1 after the upgrade"
[ -f "$INSTDIR/pospal-agent.exe" ] || fail "the upgrade removed the executable"
ms="$(wait_license)" || { fail_logs; fail "the upgraded service does not answer"; }
new_pid="$(service_pid)"
[ -n "$new_pid" ] && [ "$new_pid" != "$old_pid" ] || fail "the upgrade did not restart the service (pid $old_pid -> $new_pid)"
cli status --json >"$WORK/status2.json" || fail "status after the upgrade"
[ "$(field license_state <"$WORK/status2.json")" = trial_active ] || fail "after the upgrade: $(cat "$WORK/status2.json")"
[ "$(field machine_id <"$WORK/status2.json")" = "$machine1" ] || fail "the upgrade changed the machine id"
ok "upgraded $v1 -> $v2 in place: service restarted, still trial_active, same machine id"

# --- 7. uninstall, keeping the data -----------------------------------------------------------------
wine_run "$INSTDIR/Uninstall.exe" /S >"$WORK/uninstall.log" || fail "Uninstall.exe /S exited non-zero"
keeper_stop
prefix_idle
[ -e "$INSTDIR/pospal-agent.exe" ] && fail "the exe is still installed"
[ -e "$INSTDIR/_internal" ] && fail "_internal is still installed"
[ -e "$INSTDIR" ] && fail "the install directory is still there: $(ls "$INSTDIR")"
[ -e "$MENU" ] && fail "Start menu entries still there"
[ -n "$(service_pid)" ] && fail "the service still runs"
wine_run reg query "$SERVICE_KEY" /reg:64 >/dev/null 2>&1 && fail "the service is still registered"
[ -z "$(reg_value "$RUN_KEY" POSPalLicenseAgent)" ] || fail "the HKLM Run value is still there"
wine_run reg query "$UNINSTALL_KEY" /reg:64 >/dev/null 2>&1 && fail "the uninstall key is still there"
license_data_present || fail "a plain uninstall removed the license data"
[ -e "$LAUNCH" ] && fail "the launcher's install (program code) is still in ProgramData: $(ls "$LAUNCH")"
ok "uninstalled: service, files, shortcuts, Run value and uninstall keys removed; license data kept"

# --- 8. uninstall with data removal -----------------------------------------------------------------
keeper_start
wine_run "$SETUP2" /S >"$WORK/setup3.log" || fail "reinstall"
wait_license >/dev/null || fail "the reinstalled service does not answer"
wine_run "$INSTDIR/Uninstall.exe" /S /REMOVEDATA >"$WORK/uninstall2.log" || fail "Uninstall.exe /S /REMOVEDATA"
keeper_stop
prefix_idle
[ -e "$INSTDIR" ] && fail "the install directory is still there"
license_data_present && fail "/REMOVEDATA left license data: $(ls "${DATA_DIRS[@]}" 2>/dev/null)"
ok "uninstall /REMOVEDATA removed the license data"

# --- 9. a signed update applied by the service while a POS asks every 10 ms -------------------------
# scripts/windows_ci.sh built the next version for real and published it in a TUF repository whose root
# SETUP_V1's bundle ships. Served here over HTTP; the service's agent is told where (the system environment,
# as an operator's POSPAL_UPDATE_URL would be), to swap as soon as nothing is in flight (POSPAL_UPDATE_IDLE_S=0,
# no night window) and not to check by itself; `pospal-agent.exe update apply` stages it, as install.sh
# update does on Linux. The POS runs on the Linux side through pospal-client's AgentClient, as the Linux
# end-to-end test's does (it resends a GET once on a kept-alive connection the old version closed): no
# answer may fail, and its longest wait is the figure.
if [ -n "${POSPAL_SMOKE_UPDATE_REPO:-}" ]; then
  UPD="${POSPAL_SMOKE_UPDATE_VERSION:?}"
  repo_port="$(free_port)"
  "$LINUX_PY" -m http.server --bind 127.0.0.1 --directory "$POSPAL_SMOKE_UPDATE_REPO" "$repo_port" >>"$WORK/repo.log" 2>&1 &
  REPO_PID=$!
  export POSPAL_UPDATE_URL="http://127.0.0.1:$repo_port" POSPAL_UPDATE_IDLE_S=0 POSPAL_UPDATE_WINDOW=off \
    POSPAL_UPDATE_FIRST_CHECK_S=3600
  for v in POSPAL_UPDATE_URL POSPAL_UPDATE_IDLE_S POSPAL_UPDATE_WINDOW POSPAL_UPDATE_FIRST_CHECK_S; do
    wine_run reg add "$SYSENV" /v "$v" /d "${!v}" /f >/dev/null
  done
  wineserver -w
  keeper_start
  wine_run "$SETUP1" /S >"$WORK/setup4.log" || fail "install for the update"
  wait_license >/dev/null || { fail_logs; fail "the service does not answer before the update"; }
  before_version="$(running_version)"
  cli trial >"$WORK/trial2.log" || { fail_logs; fail "trial before the update"; }
  cli status --json >"$WORK/status-before.json" || fail "status before the update"
  "$LINUX_PY" - "$AGENT_PORT" "$WORK/pos.stop" "$WORK/pos.json" <<'PYEOF' &
import json, pathlib, sys, time
from pospal_client.client import AgentClient
from pospal_client.errors import LocalApiError
port, stop, out = int(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
answers, failures, longest, last = 0, [], 0.0, time.monotonic()
client = AgentClient(port)
while not stop.exists():
    try:
        body = client.license()
        if "license_state" not in body:
            failures.append(repr(body))
        answers += 1
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    except LocalApiError as exc:
        failures.append(f"{exc.__class__.__name__}: {exc}")
    time.sleep(0.01)
client.close()
out.write_text(json.dumps({"answers": answers, "failures": failures[:5], "failed": len(failures), "longest_ms": round(longest * 1000)}))
PYEOF
  POS_PID=$!
  sleep 1
  t0=$(now_ms)
  cli update apply >"$WORK/apply.log" || { cat "$WORK/apply.log"; fail_logs; fail "pospal-agent.exe update apply exited non-zero"; }
  grep -q "staged $UPD" "$WORK/apply.log" || fail "update apply: $(cat "$WORK/apply.log")"
  for _ in $(seq 1200); do [ "$(running_version 2>/dev/null)" = "$UPD" ] && break; sleep 0.1; done
  applied_ms=$(( $(now_ms) - t0 ))
  sleep 1
  touch "$WORK/pos.stop"
  wait "$POS_PID" || true
  [ "$(running_version)" = "$UPD" ] || { fail_logs; fail "the service still runs $(running_version) after update apply"; }
  swap="$("$LINUX_PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["outcome"], d["from"], d["to"], d["gap_s"])' "$LAUNCH/launcher.json")"
  [ "$(echo "$swap" | cut -d' ' -f1-3)" = "swapped $before_version $UPD" ] || fail "launcher.json: $swap"
  [ "$(tr -d '\r\n' <"$LAUNCH/current")" = "$UPD" ] && [ -f "$LAUNCH/versions/$UPD/pospal-agent.exe" ] \
    || fail "current is not the staged build $UPD"
  pos="$(cat "$WORK/pos.json")"
  [ "$("$LINUX_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["failed"])' "$pos")" = 0 ] || fail "the POS lost answers: $pos"
  cli status --json >"$WORK/status-after.json" || fail "status after the update"
  for f in license_state machine_id; do
    [ "$(field "$f" <"$WORK/status-after.json")" = "$(field "$f" <"$WORK/status-before.json")" ] \
      || fail "$f changed across the update: $(field "$f" <"$WORK/status-before.json") -> $(field "$f" <"$WORK/status-after.json")"
  done
  echo "windows-figure: update-apply-ms=$applied_ms update-swap-gap-s=$(echo "$swap" | cut -d' ' -f4) pos=$pos"
  ok "signed update $before_version -> $UPD applied by the service: the POS lost 0 answers ($pos), same license and machine"
  wine_run "$INSTDIR/Uninstall.exe" /S /REMOVEDATA >"$WORK/uninstall3.log" || fail "uninstall after the update"
  keeper_stop
  prefix_idle
  [ -e "$LAUNCH" ] && fail "the staged update is still in ProgramData after uninstall"
  ok "uninstall removed the staged update with the program"
fi
echo "windows smoke: all steps passed"
