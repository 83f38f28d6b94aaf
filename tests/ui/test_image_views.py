"""Image views an artist can judge: small images enlarged with crisp pixels, large ones reduced,
zoom levels, the in-app full-size viewer, the with/without overlay, grid labels that fit."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPixmap
from PySide6.QtWidgets import QApplication

from ui.widgets import pixels
from ui.widgets.compare_overlay import CompareOverlay
from ui.widgets.grid_preview import WRAP, label_font
from ui.widgets.image_preview import ImagePreview
from ui.widgets.image_viewer import ImageViewer
from ui.widgets.sample_strip import SampleStrip


def checkerboard(size: int = 64) -> QPixmap:
    image = QImage(size, size, QImage.Format.Format_RGB32)
    for y in range(size):
        for x in range(size):
            image.setPixelColor(x, y, QColor(255, 0, 0) if (x + y) % 2 else QColor(0, 0, 255))
    return QPixmap.fromImage(image)


def colours_in(image: QImage, rect) -> set[int]:
    return {image.pixel(x, y) for y in range(rect.top(), rect.bottom() + 1, 3)
            for x in range(rect.left(), rect.right() + 1, 3)}


def test_fit_scale_enlarges_by_whole_numbers_and_reduces_exactly():
    assert pixels.fit_scale(QSize(64, 64), QSize(500, 400)) == 6.0
    assert pixels.fit_scale(QSize(1024, 512), QSize(512, 512)) == 0.5
    assert pixels.fit_scale(QSize(300, 300), QSize(500, 500)) == 1.0


def test_a_64px_image_fills_the_pane_with_crisp_pixels(qtbot):
    view = ImagePreview()
    qtbot.addWidget(view)
    view.resize(520, 520)
    view.set_pixmap(checkerboard())
    target = view.image_rect()
    assert target.size() == QSize(512, 512)  # 8× each pixel, not 64 px in a big grey pane
    grabbed = view.grab().toImage()
    # Nearest-neighbour: only the two source colours, no blended purple in between.
    assert colours_in(grabbed, target.adjusted(1, 1, -1, -1)) == {
        QColor(255, 0, 0).rgb(), QColor(0, 0, 255).rgb()}


def test_zoom_levels_and_pan(qtbot):
    view = ImagePreview()
    qtbot.addWidget(view)
    view.resize(300, 300)
    view.set_pixmap(checkerboard(256))
    assert view.image_rect().width() == 256  # fits at 100 %
    view.set_zoom(4.0)
    assert view.image_rect().width() == 1024
    before = view.image_rect().topLeft()
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=QPoint(150, 150))
    qtbot.mouseMove(view, QPoint(100, 120))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=QPoint(100, 120))
    assert view.image_rect().topLeft() == before + QPoint(-50, -30)
    view.set_zoom(None)
    assert view.image_rect().width() == 256 and view.offset == QPoint()


def test_full_size_viewer_opens_in_the_app(qtbot, tmp_path):
    path = tmp_path / "sample.png"
    checkerboard().save(str(path))
    viewer = ImageViewer.show_file(path)
    qtbot.addWidget(viewer)
    assert viewer.isVisible() and viewer.view.pixmap().width() == 64
    viewer.resize(700, 600)
    QApplication.processEvents()
    assert viewer.view.scale() >= 6  # enlarged to the window, crisp
    viewer.view.set_zoom(2.0)
    assert "200 %" in viewer.info.text()


def test_samples_are_large_enough_to_judge(qtbot, tmp_path):
    path = tmp_path / "s0.png"
    checkerboard().save(str(path))
    strip = SampleStrip()
    qtbot.addWidget(strip)
    strip.show_samples(10, 1, [str(path)], ["a prompt"])
    tile = strip.buttons[str(path)]
    qtbot.waitUntil(lambda: tile.pixmap is not None, timeout=5000)
    grabbed = tile.grab().toImage()
    inner = tile.rect().adjusted(4, 4, -4, -4)
    scale = pixels.fit_scale(tile.pixmap.size(), inner.size())
    assert scale * 64 >= 192  # ≥ 3× the 64 px sample
    assert len(colours_in(grabbed, pixels.placed(tile.pixmap.size(), inner, scale)
                          .adjusted(1, 1, -1, -1))) == 2


def test_with_without_overlay_splits_and_blinks(qtbot):
    red, blue = QPixmap(64, 64), QPixmap(64, 64)
    red.fill(QColor(255, 0, 0))
    blue.fill(QColor(0, 0, 255))
    overlay = CompareOverlay()
    qtbot.addWidget(overlay)
    overlay.resize(400, 400)
    overlay.set_images(red, blue)
    target = overlay.image_rect()
    qtbot.mouseClick(overlay, Qt.MouseButton.LeftButton,
                     pos=QPoint(target.left() + target.width() // 4, target.center().y()))
    image = overlay.grab().toImage()
    y = target.bottom() - 4
    assert image.pixelColor(target.left() + 4, y) == QColor(255, 0, 0)
    assert image.pixelColor(target.right() - 4, y) == QColor(0, 0, 255)
    assert abs(overlay.split - 0.25) < 0.02
    overlay.set_blinking(True)
    first = overlay.grab().toImage().pixelColor(target.right() - 4, y)
    overlay._blink_step()
    second = overlay.grab().toImage().pixelColor(target.right() - 4, y)
    assert {first.name(), second.name()} == {"#ff0000", "#0000ff"}


def test_grid_column_labels_shrink_and_wrap_instead_of_being_cut():
    labels = [f"strength {s}" for s in ("0", "0.25", "0.5", "0.75", "1.0")]
    font = label_font(QFont("DejaVu Sans", 10), labels, 48)
    metrics = QFontMetrics(font)
    for text in labels:
        box = metrics.boundingRect(0, 0, 48, 10_000, int(WRAP), text)
        assert box.width() <= 48 and box.height() <= 2 * metrics.height()
    wide = label_font(QFont("DejaVu Sans", 10), labels, 400)
    assert wide.pointSizeF() == 10  # room enough: the font is left alone
