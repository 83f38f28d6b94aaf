"""Generated images: the large view with the image's parameters (read from the PNG's A1111
`parameters` text) and its actions, and the history strip of thumbnails (newest first)."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QIcon, QPen, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QLabel, QListView,
                               QListWidget, QListWidgetItem, QPushButton, QStyle,
                               QStyledItemDelegate, QVBoxLayout, QWidget)

from studio import infotext
from ui import outputs
from ui.thumbnails import ThumbnailLoader
from ui.widgets.image_preview import ImagePreview
from ui.widgets.image_viewer import ImageViewer

THUMB_PX = 88
HISTORY_LIMIT = 300
PathRole = Qt.ItemDataRole.UserRole
TextRole = Qt.ItemDataRole.UserRole + 1


def png_parameters(path: Path) -> str:
    """The `parameters` text chunk of a PNG ("" when there is none). Read with PIL: Qt's
    QImageReader.text() turns its line breaks into spaces, which loses the A1111 layout."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(getattr(image, "text", image.info).get("parameters", ""))
    except (OSError, ValueError, SyntaxError):
        return ""


def describe(text: str) -> str:
    """Rich text for an image's parameters: prompt, negative prompt, then the settings."""
    if not text.strip():
        return "<i>No generation parameters stored in this image.</i>"
    p = infotext.parse(text)
    esc = html.escape
    parts = [f"<b>Prompt:</b> {esc(p.prompt) or '<i>(empty)</i>'}"]
    if p.negative_prompt:
        parts.append(f"<b>Negative:</b> {esc(p.negative_prompt)}")
    settings = [f"seed <b>{p.seed}</b>", f"{p.steps} steps", esc(p.sampler),
                f"CFG {p.cfg_scale:g}", f"{p.width}×{p.height}"]
    if p.model:
        settings.append(f"model {esc(p.model)}")
    loras = ", ".join(f"{esc(n)} {w:g}" for n, w in p.loras) or "none"
    settings.append(f"LoRA: {loras}")
    parts.append(" · ".join(settings))
    return "<br>".join(parts)


def save_copy(parent: QWidget, path: Path, title: str = "Save the image as") -> Path | None:
    """Copy an image (with its parameters chunk) to where the artist chooses."""
    target, _ = QFileDialog.getSaveFileName(parent, title, str(Path.home() / path.name),
                                            "PNG images (*.png)")
    if not target:
        return None
    target_path = Path(target)
    if target_path.suffix.lower() != ".png":
        target_path = target_path.with_suffix(".png")
    shutil.copy2(path, target_path)
    return target_path


class ResultView(QWidget):
    """One image at a size that fits, its parameters, and what to do with it."""

    status_message = Signal(str)
    reuse_requested = Signal(object)  # infotext.Parameters

    def __init__(self, parent=None):
        super().__init__(parent)
        self.path: Path | None = None
        self.text = ""
        self.preview = ImagePreview()
        self.preview.set_pixmap(None, "Write a prompt, pick your LoRA and press Generate.\n\n"
                                      "Your images appear here and in the history below.")
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.copy_seed = QPushButton("Copy seed")
        self.copy_seed.setToolTip("Copy this image's seed to the clipboard.")
        self.copy_seed.clicked.connect(self._copy_seed)
        self.copy_prompt = QPushButton("Copy prompt")
        self.copy_prompt.setToolTip("Copy the prompt (with its <lora:…> tags, as A1111 and "
                                    "Forge write it) to the clipboard.")
        self.copy_prompt.clicked.connect(self._copy_prompt)
        self.reuse = QPushButton("Use these settings")
        self.reuse.setToolTip("Put this image's prompt, seed (locked) and settings back into "
                              "the form, to vary it.")
        self.reuse.clicked.connect(
            lambda: self.text and self.reuse_requested.emit(infotext.parse(self.text)))
        self.save = QPushButton("Save as…")
        self.save.setToolTip("Save a copy of the image; its parameters stay inside (A1111, "
                             "ComfyUI and Civitai read them).")
        self.save.clicked.connect(self._save)
        self.open_button = QPushButton("Open full size")
        self.open_button.setToolTip("Open the image in a window of its own, with zoom (also: "
                                    "double-click it).")
        self.open_button.clicked.connect(
            lambda: self.path and ImageViewer.show_file(self.path, self))
        self.show_button = QPushButton("Show in folder")
        self.show_button.setToolTip("Open the folder of generated images.")
        self.show_button.clicked.connect(lambda: self.path and outputs.open_folder(self.path))
        actions = QHBoxLayout()
        for button in (self.open_button, self.copy_seed, self.copy_prompt, self.reuse, self.save,
                       self.show_button):
            actions.addWidget(button)
        actions.addStretch()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.info)
        layout.addLayout(actions)
        self.show_image(None)

    def show_image(self, path: Path | None, text: str | None = None) -> None:
        self.path = Path(path) if path else None
        self.text = (text if text is not None else png_parameters(self.path)) if path else ""
        for button in (self.open_button, self.copy_seed, self.copy_prompt, self.reuse, self.save,
                       self.show_button):
            button.setEnabled(self.path is not None)
        if self.path is None:
            self.info.setText("")
            return
        self.preview.set_pixmap(QPixmap(str(self.path)), "The image could not be read.")
        self.preview.title = self.path.name
        self.info.setText(describe(self.text))

    def _copy_seed(self) -> None:
        seed = str(infotext.parse(self.text).seed)
        QGuiApplication.clipboard().setText(seed)
        self.status_message.emit(f"Copied the seed {seed}.")

    def _copy_prompt(self) -> None:
        params = infotext.parse(self.text)
        QGuiApplication.clipboard().setText(params.prompt)
        self.status_message.emit("Copied the prompt.")

    def _save(self) -> None:
        if self.path is not None:
            target = save_copy(self, self.path)
            if target is not None:
                self.status_message.emit(f"Saved {target}")


class ThumbDelegate(QStyledItemDelegate):
    """Paints a history cell as its thumbnail, centred, with a highlight frame when selected.
    Why not the default: in icon mode it keeps a text line under every icon even when the item
    has no text, and paints the selection there, as a bar below the picture."""

    def paint(self, painter, option, index) -> None:
        painter.save()
        rect = option.rect.adjusted(2, 2, -2, -2)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.setPen(QPen(option.palette.highlight().color(), 3))
            painter.drawRoundedRect(rect, 4, 4)
        icon = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(icon, QIcon):
            pixmap = icon.pixmap(QSize(THUMB_PX, THUMB_PX))
            size = pixmap.deviceIndependentSize().toSize().scaled(
                QSize(THUMB_PX, THUMB_PX), Qt.AspectRatioMode.KeepAspectRatio)
            target = rect.center() - QPoint(size.width() // 2, size.height() // 2)
            painter.drawPixmap(QRect(target, size), pixmap)
        painter.restore()

    def sizeHint(self, option, index) -> QSize:
        return QSize(THUMB_PX + 10, THUMB_PX + 10)


class History(QListWidget):
    """Thumbnails of the generated images, newest first; selecting one shows it."""

    image_selected = Signal(object, str)  # path, parameters text

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loader = ThumbnailLoader(limit=HISTORY_LIMIT, parent=self)
        self.loader.ready.connect(self._on_ready)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.setGridSize(QSize(THUMB_PX + 10, THUMB_PX + 10))
        self.setUniformItemSizes(True)
        self.setItemDelegate(ThumbDelegate(self))
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setFixedHeight(THUMB_PX + 12 + self.horizontalScrollBar().sizeHint().height())
        self.setToolTip("Everything generated in this project (saved in its generated/ folder), "
                        "newest first.")
        self.currentItemChanged.connect(self._on_current)
        self._items: dict[str, QListWidgetItem] = {}

    def add(self, path: Path, text: str | None = None, select: bool = True) -> None:
        """Put an image first; its parameters are read from the PNG unless given."""
        key = str(path)
        item = self._items.get(key)
        if item is None:
            item = QListWidgetItem()
            item.setData(PathRole, key)
            item.setSizeHint(QSize(THUMB_PX + 10, THUMB_PX + 10))
            self.insertItem(0, item)
            self._items[key] = item
            while self.count() > HISTORY_LIMIT:
                old = self.takeItem(self.count() - 1)
                self._items.pop(old.data(PathRole), None)
        text = png_parameters(Path(key)) if text is None else text
        item.setData(TextRole, text)
        item.setToolTip(infotext.parse(text).prompt[:300] if text.strip() else Path(key).name)
        self._on_ready(key, THUMB_PX)
        if select:
            self.setCurrentItem(item)

    def clear(self) -> None:
        self._items.clear()  # before the items go: their wrappers must not be used again
        super().clear()

    def load_folder(self, folder: Path, limit: int = 60) -> None:
        """The newest images of an earlier session."""
        self.clear()
        try:
            pngs = sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime)[-limit:]
        except OSError:
            pngs = []
        for path in pngs:
            self.add(path, select=False)

    def paths(self) -> list[Path]:
        return [Path(self.item(i).data(PathRole)) for i in range(self.count())]

    def _on_ready(self, path: str, size: int) -> None:
        item = self._items.get(path)
        if item is not None and size == THUMB_PX:
            pixmap = self.loader.get(Path(path), THUMB_PX)
            if pixmap is not None:
                item.setIcon(pixmap)

    def _on_current(self, item: QListWidgetItem | None, _previous=None) -> None:
        if item is None:
            return
        self.image_selected.emit(Path(item.data(PathRole)), item.data(TextRole) or "")
