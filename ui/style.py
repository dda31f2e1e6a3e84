"""The window's stylesheet: a calm grey page, white cards, one blue primary button per view.

State colour appears only where it carries meaning (the status band and headline, set by the card),
so the state is the first thing the eye lands on.
"""

STYLESHEET = """
QWidget#agentWindow { background: #f3f4f6; }
QWidget { font-size: 13px; color: #1f2933; }
QFrame#statusCard, QFrame#panel {
    background: #ffffff; border: 1px solid #e1e4e8; border-radius: 10px;
}
QLabel#headline { font-size: 24px; font-weight: 700; }
QLabel#detail { font-size: 14px; color: #323f4b; }
QLabel#factLabel { color: #616e7c; }
QLabel#syncHint { font-size: 12px; color: #616e7c; }
QLabel#factValue { color: #1f2933; font-weight: 600; }
QLabel#pageTitle { font-size: 16px; font-weight: 700; color: #1f2933; }
QLabel#sectionTitle { font-weight: 700; margin-top: 6px; }
QLabel#intro { color: #3e4c59; }
QLabel#sourceOk { color: #1f7a45; font-weight: 600; }
QLabel#sourceMissing { color: #9aa5b1; }
QLabel#banner { border-radius: 8px; padding: 9px 12px; font-weight: 600; }
QLabel#banner[kind="error"] { background: #fdecec; color: #a61b1b; border: 1px solid #f5c2c2; }
QLabel#banner[kind="info"] { background: #e8f6ee; color: #17663a; border: 1px solid #bfe5cf; }
QLabel#terminalName { font-weight: 600; }
QFrame#terminalRow { background: #f8f9fb; border: 1px solid #e4e7eb; border-radius: 8px; }
QPushButton {
    padding: 7px 16px; border-radius: 7px; border: 1px solid #cbd2d9;
    background: #ffffff; color: #1f2933; font-weight: 600;
}
QPushButton:hover { background: #f0f3f7; }
QPushButton:disabled { color: #9aa5b1; background: #f5f7fa; }
QPushButton[primary="true"] { background: #2f6fde; border: 1px solid #2559b8; color: #ffffff; }
QPushButton[primary="true"]:hover { background: #2a63c7; }
QPushButton[primary="true"]:disabled { background: #9db8ea; border-color: #9db8ea; }
QPushButton#danger { color: #b42318; border-color: #efb8b3; }
QPushButton#danger:hover { background: #fdf0ef; }
QPushButton#link { border: none; background: transparent; color: #2f6fde; padding: 4px 6px; }
QLineEdit {
    padding: 7px 9px; border: 1px solid #cbd2d9; border-radius: 6px; background: #ffffff;
}
QLineEdit:focus { border: 1px solid #2f6fde; }
QProgressBar { border: none; background: #e4e7eb; border-radius: 3px; }
QProgressBar::chunk { background: #2f6fde; border-radius: 3px; }
QComboBox { padding: 4px 8px; border: 1px solid #cbd2d9; border-radius: 6px; background: #ffffff; }
"""
