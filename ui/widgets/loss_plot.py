"""Training loss over steps: raw values (faint) and an exponential moving average (bold), with an
optional log scale. Diffusion loss is very noisy step to step (random timesteps), so the trend is
only visible smoothed; the raw line stays to show the spread."""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ui import theme

SMOOTHING = 0.9  # EMA weight of the past (TensorBoard's default slider position is 0.6–0.9)


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased EMA (as in Adam/TensorBoard) so the first points aren't pulled towards 0."""
    out, ema = [], 0.0
    for i, v in enumerate(values, 1):
        ema = weight * ema + (1 - weight) * v
        out.append(ema / (1 - weight**i))
    return out


class LossPlot(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.validation: list[tuple[int, float]] = []  # (step, held-out loss) once per epoch
        self.total = 0
        self.log_scale = False
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(140)
        self.setToolTip("Training loss per step: faint blue = raw, orange = smoothed, green dots = "
                        "validation loss on held-out images (comparable between epochs). It "
                        "falls slowly and stays noisy for diffusion models; judge the LoRA by "
                        "its samples.")

    def sizeHint(self) -> QSize:
        return QSize(480, 220)

    def clear(self, total: int = 0) -> None:
        self.steps, self.losses, self.validation, self.total = [], [], [], total
        self.update()

    def add_validation(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self.validation.append((step, loss))
            self.update()

    def add(self, step: int, loss: float, total: int = 0) -> None:
        if not math.isfinite(loss):
            return
        self.steps.append(step)
        self.losses.append(loss)
        self.total = max(self.total, total)
        self.update()

    def set_log_scale(self, on: bool) -> None:
        self.log_scale = on
        self.update()

    def _y(self, v: float) -> float:
        return math.log10(max(v, 1e-8)) if self.log_scale else v

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        painter.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        fm = self.fontMetrics()
        if len(self.losses) < 2 and not self.validation:
            area = QRectF(self.rect()).adjusted(10, 10, -12, -10)
            painter.setPen(QPen(QColor("#45474e"), 1))
            painter.drawRect(area)
            painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter,
                             "The loss appears here once training runs.")
            return
        ys = [self._y(v) for v in self.losses]
        val_ys = [self._y(v) for _, v in self.validation]
        lo, hi = min(ys + val_ys), max(ys + val_ys)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.05
        lo, hi = lo - pad, hi + pad
        x_max = max([self.total, 1] + self.steps[-1:] + [s for s, _ in self.validation])
        y_ticks = [(lo + (hi - lo) * f) for f in (0.0, 0.5, 1.0)]
        y_labels = [f"{(10**y if self.log_scale else y):.4g}" for y in y_ticks]
        # Margins from the real label widths, so no tick label is ever clipped.
        left = max(fm.horizontalAdvance(t) for t in y_labels) + 14
        right = fm.horizontalAdvance(str(x_max)) // 2 + 8
        area = QRectF(left, fm.height() // 2 + 4, self.width() - left - right,
                      self.height() - 2 * fm.height() - 14)

        def point(step: int, y: float) -> QPointF:
            return QPointF(area.left() + area.width() * step / x_max,
                           area.bottom() - area.height() * (y - lo) / (hi - lo))

        painter.setPen(QPen(QColor("#45474e"), 1))
        painter.drawRect(area)
        painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
        for y, label in zip(y_ticks, y_labels):
            pos = point(0, y)
            painter.drawText(QRectF(0, pos.y() - fm.height() / 2, left - 6, fm.height()),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        for step in (0, x_max // 2, x_max):
            pos = point(step, lo)
            painter.drawText(QRectF(pos.x() - 40, area.bottom() + 3, 80, fm.height()),
                             Qt.AlignmentFlag.AlignCenter, str(step))
        painter.drawText(QRectF(area.left(), area.bottom() + 3 + fm.height(), area.width(),
                                fm.height()), Qt.AlignmentFlag.AlignCenter, "step")

        painter.setClipRect(area)
        lines = [] if not ys else [(ys, QColor(theme.ACCENT).lighter(110), 1.0),
                                   ([self._y(v) for v in smooth(self.losses)],
                                    QColor(theme.WARNING), 2.2)]
        for values, colour, width in lines:
            if values is ys:
                colour.setAlpha(110)
            path = QPainterPath(point(self.steps[0], values[0]))
            for step, y in zip(self.steps[1:], values[1:]):
                path.lineTo(point(step, y))
            painter.setPen(QPen(colour, width))
            painter.drawPath(path)
        if self.validation:
            colour = QColor(theme.SUCCESS)
            painter.setPen(QPen(colour, 1.6))
            painter.setBrush(colour)
            points = [point(step, y) for (step, _), y in zip(self.validation, val_ys)]
            for a, b in zip(points, points[1:]):
                painter.drawLine(a, b)
            for p in points:
                painter.drawEllipse(p, 3.5, 3.5)
        painter.setClipping(False)
        painter.setPen(pal.color(QPalette.ColorRole.Text))
        legend = [f"loss {self.losses[-1]:.4f}", f"smoothed {smooth(self.losses)[-1]:.4f}"] \
            if self.losses else []
        if self.validation:
            legend.append(f"validation {self.validation[-1][1]:.4f}")
        legend = " · ".join(legend)
        painter.drawText(area.adjusted(8, 4, -8, -4), Qt.AlignmentFlag.AlignTop |
                         Qt.AlignmentFlag.AlignRight, legend)
