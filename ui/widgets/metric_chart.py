"""A small line chart of one report-card metric across a run's LoRA files (x: epoch or step), with
the base model's value as a dashed reference line and one point marked (the recommended file)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ui import theme


class MetricChart(QWidget):
    def __init__(self, title: str, better: str = "", parent=None):
        super().__init__(parent)
        self.title = title
        self.better = better  # "lower is better" / "higher is better", shown beside the title
        self.setToolTip(f"{title}: {better}" if better else title)
        self.points: list[tuple[str, float]] = []  # (x label, value), in training order
        self.reference: float | None = None  # the base model's value
        self.marked: int | None = None  # index of the recommended point
        self.fmt = "{:.2f}"
        self.setMinimumSize(180, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:
        return QSize(200, 120)

    def set_points(self, points: list[tuple[str, float | None]], reference: float | None = None,
                   marked: int | None = None, fmt: str = "{:.2f}") -> None:
        """Points without a value (a metric not measured for that file) are left out."""
        kept = [(i, label, v) for i, (label, v) in enumerate(points) if v is not None]
        self.points = [(label, float(v)) for _, label, v in kept]
        self.marked = next((n for n, (i, _, _) in enumerate(kept) if i == marked), None)
        self.reference, self.fmt = reference, fmt
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        painter.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        fm = self.fontMetrics()
        painter.setPen(pal.color(QPalette.ColorRole.Text))
        head = QRectF(8, 4, self.width() - 16, fm.height())
        painter.drawText(head, Qt.AlignmentFlag.AlignLeft, self.title)
        # The hint only where it fits beside the title (a narrow chart drew one over the
        # other); the tooltip always has it.
        if fm.horizontalAdvance(self.title) + 12 + fm.horizontalAdvance(self.better) \
                <= head.width():
            painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(head, Qt.AlignmentFlag.AlignRight, self.better)
        values = [v for _, v in self.points] + ([self.reference] if self.reference is not None
                                                 else [])
        area = QRectF(8, fm.height() + 10, self.width() - 16, self.height() - 2 * fm.height()
                      - 18)
        painter.setPen(QPen(QColor("#45474e"), 1))
        painter.drawRect(area)
        if not self.points:
            painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "not measured")
            return
        lo, hi = min(values), max(values)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.12
        lo, hi = lo - pad, hi + pad
        n = len(self.points)

        def point(i: int, v: float) -> QPointF:
            x = area.left() + area.width() * ((i + 0.5) / n)
            return QPointF(x, area.bottom() - area.height() * (v - lo) / (hi - lo))

        if self.reference is not None:
            y = point(0, self.reference).y()
            painter.setPen(QPen(QColor(theme.MUTED), 1, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            painter.drawText(QRectF(area.left() + 3, y - fm.height(), area.width(), fm.height()),
                             Qt.AlignmentFlag.AlignLeft,
                             f"base {self.fmt.format(self.reference)}")
        pts = [point(i, v) for i, (_, v) in enumerate(self.points)]
        painter.setPen(QPen(QColor(theme.ACCENT).lighter(120), 2))
        for a, b in zip(pts, pts[1:]):
            painter.drawLine(a, b)
        painter.setBrush(QColor(theme.ACCENT).lighter(120))
        for i, p in enumerate(pts):
            painter.drawEllipse(p, 3, 3)
        if self.marked is not None:
            p = pts[self.marked]
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(theme.SUCCESS), 2))
            painter.drawEllipse(p, 7, 7)
            text = self.fmt.format(self.points[self.marked][1])
            width = fm.horizontalAdvance(text) + 4
            x = min(max(p.x() - width / 2, area.left()), area.right() - width)  # kept inside
            painter.drawText(QRectF(x, p.y() - fm.height() - 8, width, fm.height()),
                             Qt.AlignmentFlag.AlignCenter, text)
        painter.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
        every = max(1, (n * fm.horizontalAdvance("00 ")) // max(1, int(area.width())) + 1)
        for i, (label, _) in enumerate(self.points):
            if i % every == 0 or i == n - 1:
                x = pts[i].x()
                painter.drawText(QRectF(x - 30, area.bottom() + 2, 60, fm.height()),
                                 Qt.AlignmentFlag.AlignCenter, label)
