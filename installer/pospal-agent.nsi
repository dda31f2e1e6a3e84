; POSPal License Agent: Windows installer (NSIS 3, Modern UI 2).
;
; What it does:
;   - installs per machine into Program Files, with Start menu shortcuts;
;   - installs and starts the license service "POSPal License Agent" (POSPalAgent, automatic start at
;     boot, NT SERVICE\POSPalAgent, restarted on failure) through `pospal-agent.exe service install`,
;     which also sets the DACLs of %ProgramData%\POSPal, the marks key and the service (agent/host/winacl.py);
;   - starts only the tray at login for every user (HKLM Run key: `run --tray-only`);
;   - upgrades in place: stops the service and the trays, replaces the program files, keeps the license
;     data (the same files, re-protected), installs the service again over itself and starts it;
;   - works the same when a deployment tool runs it as SYSTEM: nothing runs as the installer's account;
;   - uninstalls cleanly: the service is stopped and removed; the license data is kept unless "Remove my
;     license data" is ticked (or /REMOVEDATA), which removes %ProgramData%\POSPal with the sealed key;
;   - carries version info and shows the EULA.
;
; Compile (Linux or Windows; makensis runs from this directory, so pass absolute paths):
;   makensis -DVERSION=1.0.0 -DBUNDLE_DIR=/abs/dist/POSPalLicenseAgent -DOUTFILE=/abs/dist/setup.exe \
;            installer/pospal-agent.nsi
; scripts/build_installer.sh does this with the version read from pospal_protocol/__init__.py.

; 64-bit installer: a 64-bit-only Wine (CI) cannot start NSIS's default 32-bit stub, and the agent is
; 64-bit only anyway. Implies Unicode.
Target amd64-unicode
ManifestDPIAware true
; -DFAST_COMPRESSION: zlib, for test builds only (CI's upgrade installer): several times faster, larger.
!ifdef FAST_COMPRESSION
  SetCompressor zlib
!else
  SetCompressor /SOLID lzma
  SetCompressorDictSize 32
!endif
RequestExecutionLevel admin

!ifndef VERSION
  !error "pass -DVERSION=X.Y.Z (scripts/build_installer.sh reads it from pospal_protocol/__init__.py)"
!endif
!ifndef BUNDLE_DIR
  !error "pass -DBUNDLE_DIR=<absolute path of dist/POSPalLicenseAgent>"
!endif
!ifndef OUTFILE
  !define OUTFILE "..\dist\POSPalLicenseAgent-Setup-${VERSION}.exe"
!endif
; VIProductVersion needs four numbers; X.Y.Z becomes X.Y.Z.0.
!searchparse /noerrors "${VERSION}" "" V_MAJOR "." V_MINOR "." V_PATCH
!ifndef V_PATCH
  !error "VERSION must look like X.Y.Z, got ${VERSION}"
!endif
!searchparse /noerrors "${V_PATCH}" "" V_PATCH_NUM "-"
!ifdef V_PATCH_NUM
  !undef V_PATCH
  !define V_PATCH "${V_PATCH_NUM}"
!endif

; Code signing (Windows build workflow): -DSIGN="<command that signs the file given as its last
; argument>" signs the uninstaller as it is written and the installer once it is compiled.
!ifdef SIGN
  !uninstfinalize `${SIGN} "%1"` = 0
  !finalize `${SIGN} "%1"` = 0
!endif

!define PRODUCT "POSPal License Agent"
!define COMPANY "POSPal"
!define APP_EXE "POSPalLicenseAgent.exe"
!define PROCESS "POSPalLicenseAgent.exe"
; The console twin for the command line (pospal-agent.exe status, trial, ...), built by build.spec.
!define CLI_EXE "pospal-agent.exe"
!define RUN_VALUE "POSPalLicenseAgent"
!define REG_APP "Software\POSPal\License Agent"
!define REG_UNINSTALL "Software\Microsoft\Windows\CurrentVersion\Uninstall\POSPalLicenseAgent"
!define REG_RUN "Software\Microsoft\Windows\CurrentVersion\Run"
; Per-machine data (license state, sealed machine key): %ProgramData%\POSPal.
!define MACHINE_DATA "POSPal"
; Older versions kept it per user: platformdirs.user_data_dir("POSPal License Agent", "POSPal").
!define DATA_SUBDIR "POSPal\POSPal License Agent"
; Older versions kept the machine key in the user's Credential Manager under this target.
!define KEYRING_TARGET "POSPal License Agent"
; The license service (agent/host/winservice.py).
!define SERVICE "POSPalAgent"
; Versions before the service started the whole agent in each session with this scheduled task: removed.
!define START_TASK "POSPal License Agent start"

Name "${PRODUCT}"
OutFile "${OUTFILE}"
InstallDir "$PROGRAMFILES64\${PRODUCT}"
InstallDirRegKey HKLM "${REG_APP}" "InstallDir"
BrandingText "${PRODUCT} ${VERSION}"

VIProductVersion "${V_MAJOR}.${V_MINOR}.${V_PATCH}.0"
VIFileVersion "${V_MAJOR}.${V_MINOR}.${V_PATCH}.0"
VIAddVersionKey /LANG=0 "ProductName" "${PRODUCT}"
VIAddVersionKey /LANG=0 "ProductVersion" "${VERSION}"
VIAddVersionKey /LANG=0 "CompanyName" "${COMPANY}"
VIAddVersionKey /LANG=0 "FileDescription" "${PRODUCT} Setup"
VIAddVersionKey /LANG=0 "FileVersion" "${VERSION}"
VIAddVersionKey /LANG=0 "LegalCopyright" "Copyright (c) ${COMPANY}"

!include "MUI2.nsh"
!include "LogicLib.nsh"
!include "x64.nsh"
!include "FileFunc.nsh"
!include "Sections.nsh"

!define MUI_ICON "..\packaging\pospal.ico"
!define MUI_UNICON "..\packaging\pospal.ico"
!define MUI_ABORTWARNING
!define MUI_UNCOMPONENTSPAGE_NODESC

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_LICENSE "EULA.txt"
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH

!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_COMPONENTS
!insertmacro MUI_UNPAGE_INSTFILES

!insertmacro MUI_LANGUAGE "English"
!insertmacro MUI_LANGUAGE "Greek"

LangString SecProgram ${LANG_ENGLISH} "Program files"
LangString SecProgram ${LANG_GREEK} "Αρχεία προγράμματος"
LangString SecData ${LANG_ENGLISH} "Remove my license data"
LangString SecData ${LANG_GREEK} "Διαγραφή των δεδομένων άδειας"
LangString Need64 ${LANG_ENGLISH} "${PRODUCT} needs 64-bit Windows 10 or later."
LangString Need64 ${LANG_GREEK} "Το ${PRODUCT} χρειάζεται Windows 10 64-bit ή νεότερα."
LangString Uninstall ${LANG_ENGLISH} "Uninstall ${PRODUCT}"
LangString Uninstall ${LANG_GREEK} "Απεγκατάσταση ${PRODUCT}"

; Stop the service (it saves its state and releases the port; `service stop` waits for STOPPED), then
; every tray (all users' sessions) and any agent an older, per-session version started, before files are
; replaced or removed. An older pospal-agent.exe has no `service` command and just prints its usage.
; taskkill without /F asks politely first; the agent writes its cache atomically (temp file + rename), so
; the forced kill that may follow cannot corrupt license data. /IM matches every process of that name, so
; no /T (which Wine's taskkill lacks) is needed.
!macro StopAgent
  DetailPrint "Stopping ${PRODUCT}..."
  ${If} ${FileExists} "$INSTDIR\${CLI_EXE}"
    nsExec::ExecToLog '"$INSTDIR\${CLI_EXE}" service stop'
    Pop $0
  ${EndIf}
  nsExec::Exec '"$SYSDIR\taskkill.exe" /IM ${PROCESS}'
  Pop $0
  ; taskkill exits 0 when it found the process (128 when none ran).
  ${If} $0 == 0
    Sleep 2000
  ${EndIf}
  nsExec::Exec '"$SYSDIR\taskkill.exe" /F /IM ${PROCESS}'
  Pop $0
  nsExec::Exec '"$SYSDIR\taskkill.exe" /F /IM ${CLI_EXE}'
  Pop $0
  Sleep 500
!macroend

Function .onInit
  ${IfNot} ${RunningX64}
    MessageBox MB_ICONSTOP|MB_OK "$(Need64)" /SD IDOK
    Abort
  ${EndIf}
  SetRegView 64
  SetShellVarContext all
  ; An earlier install elsewhere wins, so an upgrade lands in place.
  ReadRegStr $0 HKLM "${REG_APP}" "InstallDir"
  ${If} $0 != ""
    StrCpy $INSTDIR $0
  ${EndIf}
FunctionEnd

Section "-Program" SecMain
  SetOutPath "$INSTDIR"
  !insertmacro StopAgent
  ; Replace, not merge: files an older version shipped must not linger next to the new ones.
  RMDir /r "$INSTDIR\_internal"
  File /r "${BUNDLE_DIR}\*"
  File "/oname=$INSTDIR\EULA.txt" "EULA.txt"

  WriteUninstaller "$INSTDIR\Uninstall.exe"
  CreateDirectory "$SMPROGRAMS\${PRODUCT}"
  CreateShortcut "$SMPROGRAMS\${PRODUCT}\${PRODUCT}.lnk" "$INSTDIR\${APP_EXE}" "" "$INSTDIR\${APP_EXE}" 0
  CreateShortcut "$SMPROGRAMS\${PRODUCT}\$(Uninstall).lnk" "$INSTDIR\Uninstall.exe"

  ; The tray alone starts at login in every user's session; the license core is the service.
  WriteRegStr HKLM "${REG_RUN}" "${RUN_VALUE}" '"$INSTDIR\${APP_EXE}" run --tray-only'
  ; An older version's per-session start task, if any.
  nsExec::Exec '"$SYSDIR\schtasks.exe" /Delete /F /TN "${START_TASK}"'
  Pop $0

  ; The service: created, or updated in place on an upgrade (same name, so the same service SID and
  ; data); the data directory, marks key and service DACLs set; then started. Nothing here depends on
  ; who runs the installer (an administrator, or SYSTEM under a deployment tool).
  DetailPrint "Installing the ${PRODUCT} service..."
  nsExec::ExecToLog '"$INSTDIR\${CLI_EXE}" service install'
  Pop $0
  ${If} $0 != 0
    MessageBox MB_ICONSTOP|MB_OK "The ${PRODUCT} service could not be installed (exit $0)." /SD IDOK
    SetErrorLevel 2
    Abort
  ${EndIf}
  nsExec::ExecToLog '"$INSTDIR\${CLI_EXE}" service start'
  Pop $0
  ; Not fatal: a service that cannot start yet (the port taken) is retried by its recovery actions.
  DetailPrint "service start: $0"

  WriteRegStr HKLM "${REG_APP}" "InstallDir" "$INSTDIR"
  WriteRegStr HKLM "${REG_APP}" "Version" "${VERSION}"
  WriteRegStr HKLM "${REG_UNINSTALL}" "DisplayName" "${PRODUCT}"
  WriteRegStr HKLM "${REG_UNINSTALL}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKLM "${REG_UNINSTALL}" "Publisher" "${COMPANY}"
  WriteRegStr HKLM "${REG_UNINSTALL}" "DisplayIcon" "$INSTDIR\${APP_EXE}"
  WriteRegStr HKLM "${REG_UNINSTALL}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKLM "${REG_UNINSTALL}" "UninstallString" '"$INSTDIR\Uninstall.exe"'
  WriteRegStr HKLM "${REG_UNINSTALL}" "QuietUninstallString" '"$INSTDIR\Uninstall.exe" /S'
  WriteRegDWORD HKLM "${REG_UNINSTALL}" "NoModify" 1
  WriteRegDWORD HKLM "${REG_UNINSTALL}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKLM "${REG_UNINSTALL}" "EstimatedSize" "$0"
SectionEnd

Section "-un.$(SecProgram)" UnSecMain
  !insertmacro StopAgent
  nsExec::ExecToLog '"$INSTDIR\${CLI_EXE}" service remove'
  Pop $0
  DetailPrint "service remove: $0"
  ; The service's launcher install (agent.host.winservice.install_root): program code, the seed and any
  ; signed updates it staged, not license data, so it goes with the program.
  RMDir /r "$APPDATA\${MACHINE_DATA}\install"
  DeleteRegValue HKLM "${REG_RUN}" "${RUN_VALUE}"
  ; The tray's own "start at login" toggle writes the same value under HKCU for the user who ran it.
  DeleteRegValue HKCU "${REG_RUN}" "${RUN_VALUE}"
  Delete "$SMPROGRAMS\${PRODUCT}\*.lnk"
  RMDir "$SMPROGRAMS\${PRODUCT}"
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\${APP_EXE}"
  Delete "$INSTDIR\${CLI_EXE}"
  Delete "$INSTDIR\EULA.txt"
  Delete "$INSTDIR\Uninstall.exe"
  RMDir "$INSTDIR"
  nsExec::Exec '"$SYSDIR\schtasks.exe" /Delete /F /TN "${START_TASK}"'
  Pop $0
  DeleteRegKey HKLM "${REG_UNINSTALL}"
  DeleteRegKey HKLM "${REG_APP}"
  DeleteRegKey /ifempty HKLM "Software\POSPal"
SectionEnd

; Off by default: the license cache lets a reinstall keep selling offline, and the trial and
; subscription live on the server anyway. Ticking it (or /REMOVEDATA on a silent uninstall's command
; line) removes the per-machine data with the sealed machine key, and what older per-user versions left
; for the user running the uninstaller: the data directory and the Credential Manager key.
Section /o "un.$(SecData)" UnSecData
  SetShellVarContext all
  RMDir /r "$APPDATA\${MACHINE_DATA}"
  SetShellVarContext current
  RMDir /r "$LOCALAPPDATA\${DATA_SUBDIR}"
  RMDir "$LOCALAPPDATA\POSPal"
  nsExec::Exec '"$SYSDIR\cmdkey.exe" /delete:"${KEYRING_TARGET}"'
  Pop $0
  SetShellVarContext all
SectionEnd

; After the sections: it names UnSecData.
Function un.onInit
  SetRegView 64
  SetShellVarContext all
  ; Uninstall.exe /S /REMOVEDATA: the silent form of ticking "Remove my license data".
  ${GetParameters} $0
  ClearErrors
  ${GetOptions} $0 "/REMOVEDATA" $1
  ${IfNot} ${Errors}
    SectionGetFlags ${UnSecData} $1
    IntOp $1 $1 | ${SF_SELECTED}
    SectionSetFlags ${UnSecData} $1
  ${EndIf}
FunctionEnd
