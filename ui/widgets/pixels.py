"""How an image is scaled into a pane: whole-number nearest-neighbour enlargement for small images
(a 64 px result stays crisp at 512 px), smooth reduction for large ones; zoom levels the views share."""

from __future__ import annotations

import math

from PySide6.QtCore import QRect, QRectF, QSize
from PySide6.QtGui import QPainter, QPixmap

ZOOMS = (None, 1.0, 2.0, 4.0)  # None = fit to the pane
ZOOM_NAMES = {None: "Fit", 1.0: "100 %", 2.0: "200 %", 4.0: "400 %"}


def fit_scale(image: QSize, area: QSize) -> float:
    """The scale that shows all of `image` inside `area`: a whole number ≥ 1 when the image is
    smaller (so every source pixel becomes an equal square block), the exact ratio when larger."""
    if image.width() <= 0 or image.height() <= 0 or area.width() <= 0 or area.height() <= 0:
        return 1.0
    ratio = min(area.width() / image.width(), area.height() / image.height())
    return float(max(1, math.floor(ratio))) if ratio >= 1 else ratio


def scale_for(image: QSize, area: QSize, zoom: float | None) -> float:
    return fit_scale(image, area) if zoom is None else zoom


def placed(image: QSize, area: QRect, scale: float) -> QRect:
    """The target rectangle of the scaled image, centred in `area`."""
    target = QRect(0, 0, round(image.width() * scale), round(image.height() * scale))
    target.moveCenter(area.center())
    return target


def draw(painter: QPainter, target: QRect | QRectF, pixmap: QPixmap,
         source: QRect | None = None) -> None:
    """Nearest-neighbour when enlarging (crisp pixels), smooth filtering when reducing."""
    src = source if source is not None else pixmap.rect()
    enlarging = target.width() >= src.width() and target.height() >= src.height()
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, not enlarging)
    painter.drawPixmap(target, pixmap, src)
    painter.restore()
