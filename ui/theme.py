"""The look: Fusion with a dark palette (images read better on dark, as in Krita or Photoshop),
one accent colour, and a few style-sheet roles (primary button, error text, invalid field)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle

ACCENT = "#4c7bd9"
ERROR = "#e5534b"
WARNING = "#d9a13b"
SUCCESS = "#46a35e"
PLACEHOLDER = "#3a3c42"
MUTED = "#9a9ca3"
SEVERITY_ICONS = {"error": "✖ ", "warning": "⚠ ", "info": "ℹ "}  # glyphs DejaVu has

_COLOURS = {
    QPalette.ColorRole.Window: "#2b2d31", QPalette.ColorRole.WindowText: "#e4e5e8",
    QPalette.ColorRole.Base: "#1f2024", QPalette.ColorRole.AlternateBase: "#34363c",
    QPalette.ColorRole.Text: "#e4e5e8", QPalette.ColorRole.Button: "#393b41",
    QPalette.ColorRole.ButtonText: "#e4e5e8", QPalette.ColorRole.Highlight: ACCENT,
    QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#393b41",
    QPalette.ColorRole.ToolTipText: "#e4e5e8", QPalette.ColorRole.PlaceholderText: MUTED,
    QPalette.ColorRole.Link: "#7fa6f0", QPalette.ColorRole.BrightText: "#ffffff",
    QPalette.ColorRole.Mid: "#45474e", QPalette.ColorRole.Dark: "#1a1b1e",
    QPalette.ColorRole.Light: "#50535a", QPalette.ColorRole.Midlight: "#45474e",
    QPalette.ColorRole.Shadow: "#111214",
}

STYLE_SHEET = f"""
QPushButton[role="primary"] {{
    background: {ACCENT}; color: white; font-weight: bold; border: none;
    border-radius: 5px; padding: 7px 22px;
}}
QPushButton[role="primary"]:hover {{ background: #5d8be6; }}
QPushButton[role="primary"]:disabled {{ background: #3f4450; color: #8a8d95; }}
QLabel[role="error"] {{ color: {ERROR}; }}
QLabel[role="warning"] {{ color: {WARNING}; }}
QLabel[role="muted"] {{ color: {MUTED}; }}
QLabel[role="heading"] {{ font-size: 13pt; font-weight: bold; }}
QFrame[role="card"] {{ background: #303237; border: 1px solid #3d3f45; border-radius: 6px; }}
QFrame[role="banner-error"] {{ background: #4a2a2a; border: 1px solid {ERROR};
    border-radius: 6px; }}
QLabel[role="banner-warning"] {{ background: #45391f; border: 1px solid {WARNING};
    border-radius: 6px; padding: 8px; }}
QFrame[role="banner-ok"] {{ background: #26402e; border: 1px solid {SUCCESS}; border-radius: 6px; }}
*[invalid="true"] {{ border: 1px solid {ERROR}; border-radius: 3px; }}
QToolTip {{ padding: 4px; }}
"""


class Style(QProxyStyle):
    """Fusion, with check boxes and radio buttons drawn with a visible border: Fusion outlines
    them in a darker shade of the window colour, which all but disappears on a dark palette."""

    def drawPrimitive(self, element, option, painter: QPainter, widget=None) -> None:
        radio = element == QStyle.PrimitiveElement.PE_IndicatorRadioButton
        if not radio and element != QStyle.PrimitiveElement.PE_IndicatorCheckBox:
            return super().drawPrimitive(element, option, painter, widget)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        box = QRectF(option.rect).adjusted(1.5, 1.5, -1.5, -1.5)
        enabled = bool(option.state & QStyle.StateFlag.State_Enabled)
        on = bool(option.state & QStyle.StateFlag.State_On)
        painter.setPen(QPen(QColor(ACCENT if on else "#8a8d96" if enabled else "#55585f"), 1.2))
        if radio:
            self._radio(painter, box, on, enabled, option.palette.base())
        else:
            self._check(painter, box, on, enabled, option.palette.base())
        painter.restore()

    @staticmethod
    def _check(painter: QPainter, box: QRectF, on: bool, enabled: bool, base) -> None:
        painter.setBrush(QColor(ACCENT) if on and enabled else base)
        painter.drawRoundedRect(box, 3, 3)
        if on:
            tick = QPainterPath(QPointF(box.left() + box.width() * 0.22, box.center().y()))
            tick.lineTo(box.left() + box.width() * 0.42, box.bottom() - box.height() * 0.25)
            tick.lineTo(box.right() - box.width() * 0.2, box.top() + box.height() * 0.25)
            painter.setPen(QPen(QColor("white"), 1.8, Qt.PenStyle.SolidLine,
                                Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(tick)

    @staticmethod
    def _radio(painter: QPainter, box: QRectF, on: bool, enabled: bool, base) -> None:
        painter.setBrush(base)
        painter.drawEllipse(box)
        if on:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(ACCENT if enabled else "#55585f"))
            painter.drawEllipse(box.adjusted(box.width() * 0.25, box.height() * 0.25,
                                             -box.width() * 0.25, -box.height() * 0.25))


def apply(app: QApplication) -> None:
    app.setStyle(Style("Fusion"))
    palette = QPalette()
    for role, colour in _COLOURS.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText,
                 QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#7d8088"))
    app.setPalette(palette)
    font = QFont(app.font())
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
    app.setFont(font)
    app.setStyleSheet(STYLE_SHEET)


def set_role(widget, role: str) -> None:
    """Switch a widget's style-sheet role (the style must be re-polished to notice)."""
    widget.setProperty("role", role)
    widget.style().unpolish(widget)
    widget.style().polish(widget)


def set_invalid(widget, invalid: bool) -> None:
    if bool(widget.property("invalid")) != invalid:
        widget.setProperty("invalid", invalid)
        widget.style().unpolish(widget)
        widget.style().polish(widget)
