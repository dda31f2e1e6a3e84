"""Draw the application icon (packaging/pospal.ico and pospal.png) used by the bundle and installer.

The icon is drawn with shapes, not a font, so it comes out the same on every machine. The files are
committed; run ``python packaging/make_icon.py`` again only to change the design. ICO entries are
stored as PNG (supported since Windows Vista), which keeps the file small at 256 px.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

SIZES = (16, 24, 32, 48, 64, 128, 256)
BRAND = "#1f5fbf"


def draw_png(size: int) -> bytes:
    """Return the icon at ``size`` x ``size`` pixels as PNG bytes."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRectF, Qt
    from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath

    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = size / 16.0
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(BRAND))
    painter.drawRoundedRect(QRectF(0.5 * s, 0.5 * s, 15 * s, 15 * s), 3.2 * s, 3.2 * s)
    # A bold "P": stem plus a bowl cut out of a rounded block.
    letter = QPainterPath()
    letter.addRect(QRectF(4.2 * s, 3.2 * s, 2.4 * s, 9.6 * s))
    bowl = QPainterPath()
    bowl.addRoundedRect(QRectF(4.2 * s, 3.2 * s, 7.8 * s, 6.0 * s), 3.0 * s, 3.0 * s)
    hole = QPainterPath()
    hole.addRoundedRect(QRectF(6.6 * s, 5.0 * s, 3.2 * s, 2.4 * s), 1.2 * s, 1.2 * s)
    letter = letter.united(bowl.subtracted(hole))
    painter.setBrush(QColor("white"))
    painter.drawPath(letter)
    # A green dot: "licensed", the state the product exists to keep.
    painter.setBrush(QColor("#2ea043"))
    painter.setPen(QColor("white"))
    painter.drawEllipse(QRectF(10.0 * s, 10.0 * s, 5.0 * s, 5.0 * s))
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(data.data())


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """Pack PNG images keyed by size into one .ico file."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = len(header) + 16 * len(pngs)
    entries, blobs = b"", b""
    for size, png in sorted(pngs.items()):
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICONDIRENTRY
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(png), offset + len(blobs))
        blobs += png
    return header + entries + blobs


def main() -> int:
    """Write pospal.ico and pospal.png next to this file."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    out = Path(__file__).resolve().parent
    pngs = {size: draw_png(size) for size in SIZES}
    (out / "pospal.ico").write_bytes(ico_bytes(pngs))
    (out / "pospal.png").write_bytes(pngs[256])
    del app
    print(f"wrote {out / 'pospal.ico'} and {out / 'pospal.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
