"""Two same-seed images on top of each other: a split line to drag (left: without the LoRA, right:
with it), or blinking between them — the differences a side-by-side view hides."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

from ui.widgets import pixels

BLINK_MS = 600


class CompareOverlay(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.before: QPixmap | None = None
        self.after: QPixmap | None = None
        self.labels = ("without", "with")
        self.split = 0.5       # where the line is, as a fraction of the image's width
        self.showing_after = True
        self.timer = QTimer(self)
        self.timer.setInterval(BLINK_MS)
        self.timer.timeout.connect(self._blink_step)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 160)
        self.setMouseTracking(False)
        self.setToolTip("Drag to move the line: left of it without the LoRA, right of it with it.")

    def sizeHint(self) -> QSize:
        return QSize(480, 480)

    def set_images(self, before: QPixmap, after: QPixmap,
                   labels: tuple[str, str] = ("without", "with")) -> None:
        self.before, self.after, self.labels = before, after, labels
        self.update()

    def set_blinking(self, on: bool) -> None:
        self.showing_after = True
        self.timer.start() if on else self.timer.stop()
        self.update()

    def blinking(self) -> bool:
        return self.timer.isActive()

    def _blink_step(self) -> None:
        self.showing_after = not self.showing_after
        self.update()

    def image_rect(self) -> QRect:
        if self.before is None or self.before.isNull():
            return QRect()
        scale = pixels.fit_scale(self.before.size(), self.size())
        return pixels.placed(self.before.size(), self.rect(), scale)

    def _set_split_from(self, x: float) -> None:
        target = self.image_rect()
        if target.width() > 0:
            self.split = min(1.0, max(0.0, (x - target.left()) / target.width()))
            self.update()

    def mousePressEvent(self, event) -> None:
        self._set_split_from(event.position().x())

    def mouseMoveEvent(self, event) -> None:
        self._set_split_from(event.position().x())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
        if self.before is None or self.after is None or self.before.isNull():
            return
        target = self.image_rect()
        if self.blinking():
            shown = self.after if self.showing_after else self.before
            pixels.draw(painter, target, shown)
            self._label(painter, target, self.labels[1 if self.showing_after else 0], left=True)
            return
        cut = round(target.width() * self.split)
        src_cut = round(self.before.width() * self.split)
        if cut > 0:
            pixels.draw(painter, QRect(target.left(), target.top(), cut, target.height()),
                        self.before, QRect(0, 0, src_cut, self.before.height()))
        if cut < target.width():
            pixels.draw(painter, QRect(target.left() + cut, target.top(), target.width() - cut,
                                       target.height()), self.after,
                        QRect(src_cut, 0, self.after.width() - src_cut, self.after.height()))
        painter.setPen(QPen(QColor(255, 255, 255), 2))
        painter.drawLine(target.left() + cut, target.top(), target.left() + cut, target.bottom())
        self._label(painter, target, self.labels[0], left=True)
        self._label(painter, target, self.labels[1], left=False)

    def _label(self, painter: QPainter, target: QRect, text: str, left: bool) -> None:
        metrics = painter.fontMetrics()
        box = QRect(0, 0, metrics.horizontalAdvance(text) + 12, metrics.height() + 6)
        box.moveTop(target.top() + 6)
        if left:
            box.moveLeft(target.left() + 6)
        else:
            box.moveRight(target.right() - 6)
        painter.fillRect(box, QColor(0, 0, 0, 160))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
