"""Tray and window icons drawn with QPainter: a shield in the state's colour with a glyph on it.

Green with a tick (licensed), blue with a clock (trial), amber with "!" (grace, payment failed), red with a
cross (orders stopped), grey with "?" (not activated). The glyph keeps the icon readable for colour-blind
staff. Each icon carries pixmaps at several sizes so the tray, the taskbar and HiDPI screens stay sharp.
"""

from __future__ import annotations

from functools import cache

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QIcon,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPen,
    QPixmap,
)

from ui.present import Kind, kind_of

SIZES = (16, 20, 24, 32, 40, 48, 64, 128, 256)

COLORS: dict[Kind, str] = {
    Kind.ACTIVE: "#1f9d55",
    Kind.TRIAL: "#2f6fde",
    Kind.WARNING: "#e8930c",
    Kind.STOPPED: "#d63a3a",
    Kind.MISSING: "#858c96",
}


def color_for(kind: Kind) -> QColor:
    """The colour of a state family."""
    return QColor(COLORS[kind])


def _shield(size: float) -> QPainterPath:
    """A badge-shaped shield filling a square of ``size``, with a little margin for the outline."""
    m = size * 0.07
    left, right, top, bottom = m, size - m, m, size - m * 0.6
    mid = size / 2
    r = size * 0.12
    path = QPainterPath()
    path.moveTo(left + r, top)
    path.lineTo(right - r, top)
    path.quadTo(right, top, right, top + r)
    path.lineTo(right, size * 0.48)
    path.cubicTo(right, size * 0.74, mid + size * 0.16, size * 0.86, mid, bottom)
    path.cubicTo(mid - size * 0.16, size * 0.86, left, size * 0.74, left, size * 0.48)
    path.lineTo(left, top + r)
    path.quadTo(left, top, left + r, top)
    path.closeSubpath()
    return path


def _glyph(painter: QPainter, kind: Kind, size: float) -> None:
    white = QColor("#ffffff")
    pen = QPen(
        white,
        max(1.6, size * 0.11),
        Qt.PenStyle.SolidLine,
        Qt.PenCapStyle.RoundCap,
        Qt.PenJoinStyle.RoundJoin,
    )
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    cx, cy = size / 2, size * 0.45
    s = size
    if kind is Kind.ACTIVE:
        tick = QPainterPath(QPointF(cx - s * 0.19, cy + s * 0.01))
        tick.lineTo(cx - s * 0.05, cy + s * 0.15)
        tick.lineTo(cx + s * 0.2, cy - s * 0.13)
        painter.drawPath(tick)
    elif kind is Kind.TRIAL:
        pen.setWidthF(max(1.3, size * 0.08))
        painter.setPen(pen)
        rad = s * 0.2
        painter.drawEllipse(QPointF(cx, cy), rad, rad)
        painter.drawLine(QPointF(cx, cy), QPointF(cx, cy - rad * 0.62))
        painter.drawLine(QPointF(cx, cy), QPointF(cx + rad * 0.5, cy + rad * 0.2))
    elif kind is Kind.WARNING:
        painter.drawLine(QPointF(cx, cy - s * 0.2), QPointF(cx, cy + s * 0.05))
        painter.setBrush(white)
        painter.setPen(Qt.PenStyle.NoPen)
        dot = max(1.0, s * 0.065)
        painter.drawEllipse(QPointF(cx, cy + s * 0.2), dot, dot)
    elif kind is Kind.STOPPED:
        d = s * 0.15
        painter.drawLine(QPointF(cx - d, cy - d), QPointF(cx + d, cy + d))
        painter.drawLine(QPointF(cx + d, cy - d), QPointF(cx - d, cy + d))
    else:
        font = QFont("DejaVu Sans")
        font.setBold(True)
        font.setPixelSize(max(8, int(s * 0.5)))
        painter.setFont(font)
        painter.drawText(QRectF(0, cy - s * 0.3, s, s * 0.6), Qt.AlignmentFlag.AlignCenter, "?")


def render(kind: Kind, size: int) -> QPixmap:
    """One icon pixmap of ``size`` pixels for a state family."""
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    base = color_for(kind)
    shield = _shield(size)
    gradient = QLinearGradient(0, 0, 0, size)
    gradient.setColorAt(0.0, base.lighter(118))
    gradient.setColorAt(1.0, base.darker(112))
    painter.setBrush(gradient)
    painter.setPen(QPen(base.darker(140), max(1.0, size / 32)))
    painter.drawPath(shield)
    _glyph(painter, kind, size)
    painter.end()
    return pix


@cache
def icon_for_kind(kind: Kind) -> QIcon:
    """The multi-size icon for a state family (cached: drawing happens once per family)."""
    icon = QIcon()
    for size in SIZES:
        icon.addPixmap(render(kind, size))
    return icon


def icon_for_state(state: str, licensed: bool | None = None) -> QIcon:
    """The icon for a ``license_state`` (``licensed`` false turns amber states red)."""
    return icon_for_kind(kind_of(state, licensed))


def icon_for_status(status) -> QIcon:
    """The icon for a LicenseStatus."""
    return icon_for_state(status.license_state, getattr(status, "licensed", None))
