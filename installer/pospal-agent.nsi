; POSPal License Agent: Windows installer (NSIS 3, Modern UI 2).
;
; What it does:
;   - installs per machine into Program Files, with Start menu shortcuts;
;   - starts the agent at login for every user (HKLM Run key);
;   - upgrades in place: stops a running agent, replaces the program files, keeps the license data;
;   - uninstalls cleanly, keeping the license data unless "Remove my license data" is ticked;
;   - carries version info and shows the EULA.
;
; Compile (Linux or Windows; makensis runs from this directory, so pass absolute paths):
;   makensis -DVERSION=1.0.0 -DBUNDLE_DIR=/abs/dist/POSPalLicenseAgent -DOUTFILE=/abs/dist/setup.exe \
;            installer/pospal-agent.nsi
; scripts/build_installer.sh does this with the version read from agent/__init__.py.

Unicode true
ManifestDPIAware true
SetCompressor /SOLID lzma
SetCompressorDictSize 32
RequestExecutionLevel admin

!ifndef VERSION
  !error "pass -DVERSION=X.Y.Z (scripts/build_installer.sh reads it from agent/__init__.py)"
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
; platformdirs.user_data_dir("POSPal License Agent", "POSPal") on Windows.
!define DATA_SUBDIR "POSPal\POSPal License Agent"

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

!define MUI_ICON "..\packaging\pospal.ico"
!define MUI_UNICON "..\packaging\pospal.ico"
!define MUI_ABORTWARNING
!define MUI_FINISHPAGE_RUN
!define MUI_FINISHPAGE_RUN_FUNCTION StartAgentAsUser
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

; Stop every running agent (all users' sessions) before files are replaced or removed. taskkill
; without /F asks politely first; the agent writes its cache atomically (temp file + rename), so
; the forced kill that may follow cannot corrupt license data.
Var AgentWasRunning
!macro StopAgent
  DetailPrint "Stopping ${PRODUCT}..."
  nsExec::Exec '"$SYSDIR\taskkill.exe" /IM ${PROCESS} /T'
  Pop $0
  ; taskkill exits 0 when it found the process (128 when none ran).
  ${If} $0 == 0
    StrCpy $AgentWasRunning 1
  ${EndIf}
  Sleep 2000
  nsExec::Exec '"$SYSDIR\taskkill.exe" /F /IM ${PROCESS} /T'
  Pop $0
  nsExec::Exec '"$SYSDIR\taskkill.exe" /F /IM ${CLI_EXE} /T'
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

; The installer runs elevated; starting the agent from it would run the tray as Administrator.
; Asking Explorer to open it starts it as the signed-in user instead.
Function StartAgentAsUser
  Exec '"$WINDIR\explorer.exe" "$INSTDIR\${APP_EXE}"'
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

  ; Start at login for every user of this PC.
  WriteRegStr HKLM "${REG_RUN}" "${RUN_VALUE}" '"$INSTDIR\${APP_EXE}"'

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

; A silent upgrade (an update pushed by the shop's IT) has no finish page: start the agent again if
; it was running, so the POS keeps its license answer without waiting for the next login. (A silent
; first install, e.g. by a deployment tool running as SYSTEM, leaves the start to the next login.)
Function .onInstSuccess
  ${If} ${Silent}
  ${AndIf} $AgentWasRunning == 1
    Call StartAgentAsUser
  ${EndIf}
FunctionEnd

Function un.onInit
  SetRegView 64
  SetShellVarContext all
FunctionEnd

Section "-un.$(SecProgram)" UnSecMain
  !insertmacro StopAgent
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
  DeleteRegKey HKLM "${REG_UNINSTALL}"
  DeleteRegKey HKLM "${REG_APP}"
  DeleteRegKey /ifempty HKLM "Software\POSPal"
SectionEnd

; Off by default: the license cache lets a reinstall keep selling offline, and the trial and
; subscription live on the server anyway. Ticking it removes this user's agent data directory.
Section /o "un.$(SecData)" UnSecData
  SetShellVarContext current
  RMDir /r "$LOCALAPPDATA\${DATA_SUBDIR}"
  RMDir "$LOCALAPPDATA\POSPal"
  SetShellVarContext all
SectionEnd
