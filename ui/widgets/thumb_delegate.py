"""Paints one dataset grid cell: thumbnail, name, issue badge, kohya folder and repeats, and the
excluded state."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPalette, QPen
from PySide6.QtWidgets import QStyle, QStyledItemDelegate

from ui import theme
from ui.dataset_model import BrokenRole, ExcludedRole, GroupRole, IssuesRole

CELL = QSize(168, 184)
PICTURE = 150  # px, the square the thumbnail is fitted into


class ThumbDelegate(QStyledItemDelegate):
    def sizeHint(self, option, index) -> QSize:
        return CELL

    def paint(self, painter: QPainter, option, index) -> None:
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        rect = option.rect.adjusted(3, 3, -3, -3)
        palette = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(palette.color(QPalette.ColorRole.Highlight))
            painter.drawRoundedRect(QRectF(rect), 6, 6)
        elif option.state & QStyle.StateFlag.State_MouseOver:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(palette.color(QPalette.ColorRole.AlternateBase))
            painter.drawRoundedRect(QRectF(rect), 6, 6)

        box = QRect(rect.x() + (rect.width() - PICTURE) // 2, rect.y() + 4, PICTURE, PICTURE)
        excluded = bool(index.data(ExcludedRole))
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if excluded:
            painter.setOpacity(0.3)
        if pixmap is not None and not pixmap.isNull():
            size = pixmap.size().scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, size.width(), size.height())
            target.moveCenter(box.center())
            painter.drawPixmap(target, pixmap)
        else:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(theme.PLACEHOLDER))
            painter.drawRoundedRect(QRectF(box), 4, 4)
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            broken = index.data(BrokenRole)
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter,
                             "Cannot be read" if broken else "Loading…")
        painter.setOpacity(1.0)
        if excluded:
            self._ribbon(painter, box, "EXCLUDED")

        group = index.data(GroupRole)
        if group:  # "10_style · ×10": which kohya folder, and how often it trains per epoch
            self._chip(painter, box, group)
        issues = [i for i in index.data(IssuesRole) or [] if i.severity != "info"]
        if issues:
            fatal = any(i.fatal for i in issues)
            self._badge(painter, box, "!" if fatal else str(len(issues)),
                        QColor(theme.ERROR if fatal else theme.WARNING))

        name_rect = QRect(rect.x() + 4, box.bottom() + 4, rect.width() - 8, 20)
        painter.setPen(palette.color(QPalette.ColorRole.HighlightedText if selected
                                     else QPalette.ColorRole.Text))
        name = option.fontMetrics.elidedText(index.data(), Qt.TextElideMode.ElideMiddle,
                                             name_rect.width())
        painter.drawText(name_rect, Qt.AlignmentFlag.AlignCenter, name)
        painter.restore()

    @staticmethod
    def _badge(painter: QPainter, box: QRect, text: str, colour: QColor) -> None:
        radius = 11
        centre = QPointF(box.right() - radius - 2, box.top() + radius + 2)
        painter.setPen(QPen(QColor("white"), 2))
        painter.setBrush(colour)
        painter.drawEllipse(centre, radius, radius)
        font = QFont(painter.font())
        font.setBold(True)
        painter.save()
        painter.setFont(font)
        painter.drawText(QRectF(centre.x() - radius, centre.y() - radius, 2 * radius, 2 * radius),
                         Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    @staticmethod
    def _chip(painter: QPainter, box: QRect, text: str) -> None:
        painter.save()
        metrics = painter.fontMetrics()
        text = metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, box.width() - 40)
        chip = QRect(box.left() + 2, box.top() + 2, metrics.horizontalAdvance(text) + 10,
                     metrics.height() + 4)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(30, 30, 30, 210))
        painter.drawRoundedRect(QRectF(chip), 4, 4)
        painter.setPen(QColor("white"))
        painter.drawText(chip, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    @staticmethod
    def _ribbon(painter: QPainter, box: QRect, text: str) -> None:
        band = QRect(box.left(), box.center().y() - 12, box.width(), 24)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(40, 40, 40, 200))
        painter.drawRect(band)
        font = QFont(painter.font())
        font.setBold(True)
        painter.save()
        painter.setFont(font)
        painter.setPen(QColor("white"))
        painter.drawText(band, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()
