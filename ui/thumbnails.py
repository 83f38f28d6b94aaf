"""Thumbnails and previews decoded on the thread pool, cached by path, size and modification time.

QImageReader.setScaledSize lets JPEG decode at reduced size (much faster than decoding full size
and scaling). Pool threads produce QImages (thread-safe); QPixmaps are made on the GUI thread.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QSize, Signal, Slot
from PySide6.QtGui import QImage, QImageReader, QPixmap

from ui.background import pool

Key = tuple[str, int, int]  # (path, max side in px, mtime in ns)


def _key(path: Path, max_side: int) -> Key | None:
    try:
        return (str(path), max_side, Path(path).stat().st_mtime_ns)
    except OSError:
        return None


def read_scaled(path: str, max_side: int) -> QImage:
    """The image at `path` fitted into max_side² (EXIF rotation applied); null on error."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and max(size.width(), size.height()) > max_side:
        scale = max_side / max(size.width(), size.height())
        reader.setScaledSize(QSize(max(1, round(size.width() * scale)),
                                   max(1, round(size.height() * scale))))
    return reader.read()


class _Decode(QRunnable):
    def __init__(self, loader: ThumbnailLoader, key: Key):
        super().__init__()
        self.loader, self.key = loader, key

    def run(self) -> None:
        image = read_scaled(self.key[0], self.key[1])
        self.loader._decoded.emit(self.key, image)


class ThumbnailLoader(QObject):
    """`get()` returns a cached pixmap or None and queues the decode; `ready(path, max_side)` fires
    when it is available (or failed: then `is_broken` is True)."""

    ready = Signal(str, int)
    _decoded = Signal(object, QImage)  # emitted on pool threads, delivered on the GUI thread

    def __init__(self, limit: int = 800, parent: QObject | None = None):
        super().__init__(parent)
        self.limit = limit
        self._cache: OrderedDict[Key, QPixmap] = OrderedDict()
        self._pending: set[Key] = set()
        self._broken: set[Key] = set()
        self._decoded.connect(self._on_decoded)

    def get(self, path: Path, max_side: int) -> QPixmap | None:
        key = _key(path, max_side)
        if key is None:
            return None
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if key not in self._pending and key not in self._broken:
            self._pending.add(key)
            pool().start(_Decode(self, key))
        return None

    def is_broken(self, path: Path, max_side: int) -> bool:
        key = _key(path, max_side)
        return key is None or key in self._broken

    def pending(self) -> int:
        return len(self._pending)

    @Slot(object, QImage)
    def _on_decoded(self, key: Key, image: QImage) -> None:
        self._pending.discard(key)
        if image.isNull():
            self._broken.add(key)
        else:
            self._cache[key] = QPixmap.fromImage(image)
            while len(self._cache) > self.limit:
                self._cache.popitem(last=False)
        self.ready.emit(key[0], key[1])
