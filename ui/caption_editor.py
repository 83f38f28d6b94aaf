"""The selected image large, and its caption editor (autosaved atomically, undoable).

The caption is read and written where the trainer reads it (studio.dataset.captions): the
image's .txt/.caption file, or its row in the folder's metadata.jsonl (other rows kept as they are).

Typing is saved 0.8 s after the last key, on leaving the editor, on Ctrl+S and before another
image is shown, so nothing typed is ever lost. Each save is one QUndoCommand on the project's undo
stack (consecutive saves of one image merge), so Edit ▸ Undo restores the file's previous text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from studio.dataset import captions
from ui import theme
from ui.thumbnails import ThumbnailLoader
from ui.widgets.image_preview import ImagePreview

PREVIEW_PX = 1024
PREVIEW_MIN = 256
AUTOSAVE_MS = 800


class CaptionEdit(QUndoCommand):
    """Caption file changes already written; undo/redo rewrite them. `notify(paths)` tells the
    Dataset tab which captions changed on disk."""

    MERGE_ID = 4201

    def __init__(self, changes: list[captions.Change], text: str,
                 notify: Callable[[list[Path]], None], mergeable: bool = False):
        super().__init__(text)
        self.changes, self.notify, self.mergeable = changes, notify, mergeable
        self._first_redo = True

    def id(self) -> int:
        return self.MERGE_ID if self.mergeable else -1

    def mergeWith(self, other) -> bool:
        # Same image, not only the same file: one metadata.jsonl holds many images' captions.
        if not (other.mergeable and len(self.changes) == len(other.changes) == 1
                and self.changes[0].path == other.changes[0].path
                and self.changes[0].image == other.changes[0].image):
            return False
        first = self.changes[0]
        self.changes = [captions.Change(first.image, first.path, first.old,
                                        other.changes[0].new)]
        return True

    def redo(self) -> None:
        if self._first_redo:  # QUndoStack.push calls redo(); the files are already written
            self._first_redo = False
            return
        captions.reapply(self.changes)
        self.notify([c.image for c in self.changes])

    def undo(self) -> None:
        captions.revert(self.changes)
        self.notify([c.image for c in self.changes])


class CaptionPanel(QWidget):
    saved = Signal(object)  # list[Path] whose captions changed on disk

    def __init__(self, loader: ThumbnailLoader, undo_stack: QUndoStack, parent=None):
        super().__init__(parent)
        self.loader, self.undo_stack = loader, undo_stack
        self.image: Path | None = None
        self._loaded_text: str | None = None  # what the file held when shown (None: no file)
        self.preview = ImagePreview()
        # Big enough to judge texture: a 64 px image at 4x at least, with crisp pixels.
        self.preview.setMinimumSize(PREVIEW_MIN, PREVIEW_MIN)
        self.title = QLabel()
        theme.set_role(self.title, "heading")
        self.info = QLabel()
        self.info.setWordWrap(True)
        theme.set_role(self.info, "muted")
        self.editor = QPlainTextEdit()
        self.editor.setPlaceholderText("Describe the image: what it shows, not the style. "
                                       "Tags (a, b, c) or a sentence both work.")
        self.editor.setToolTip("The caption trained with this image, saved to the .txt file "
                               "beside it as you type (Ctrl+S saves at once, Ctrl+Z undoes).")
        self.editor.setMaximumHeight(140)
        self.editor.installEventFilter(self)
        self.editor.textChanged.connect(self._on_text_changed)
        self.state = QLabel()
        theme.set_role(self.state, "muted")
        self._timer = QTimer(self, singleShot=True, interval=AUTOSAVE_MS, timeout=self.save)
        QShortcut(QKeySequence.StandardKey.Save, self.editor, activated=self.save)
        loader.ready.connect(self._on_loaded)

        caption_row = QHBoxLayout()
        caption_row.addWidget(QLabel("<b>Caption</b>"))
        caption_row.addStretch()
        caption_row.addWidget(self.state)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.preview, 1)
        layout.addWidget(self.info)
        layout.addLayout(caption_row)
        layout.addWidget(self.editor)
        self.show_image(None)

    def show_image(self, image: Path | None, selected: int = 1, details: str = "") -> None:
        self.save()
        self.image = image
        self.editor.blockSignals(True)
        if image is None:
            self.title.setText("No image selected" if selected == 0 else f"{selected} images "
                               f"selected")
            self.preview.set_pixmap(None, "Select an image to see it large and edit its caption."
                                    if selected == 0 else "Bulk actions apply to all of them.")
            self.info.setText("")
            self.editor.setPlainText("")
            self.editor.setEnabled(False)
            self._loaded_text = None
            self.state.setText("")
        else:
            self.title.setText(image.name)
            self._loaded_text = captions.read(image)
            self.editor.setPlainText(self._loaded_text or "")
            self.editor.setEnabled(True)
            self.info.setText(details)
            where = captions.source(image)
            self.state.setText("no caption file yet" if where is None else
                               f"in {where.path.name}" if where.in_metadata else "")
            self._show_preview()
        self.editor.blockSignals(False)

    def reload(self) -> None:
        """Re-read the shown caption (after undo or a bulk edit changed the file)."""
        if self.image is not None:
            self._timer.stop()
            self.show_image(self.image, details=self.info.text())

    def _show_preview(self) -> None:
        pixmap = self.loader.get(self.image, PREVIEW_PX)
        if pixmap is not None:
            self.preview.set_pixmap(pixmap)
        elif self.loader.is_broken(self.image, PREVIEW_PX):
            self.preview.set_pixmap(None, "This file cannot be read as an image.")
        else:
            self.preview.set_pixmap(None, "Loading…")

    def _on_loaded(self, path: str, size: int) -> None:
        if self.image is not None and size == PREVIEW_PX and path == str(self.image):
            self._show_preview()

    def _on_text_changed(self) -> None:
        self.state.setText("editing…")
        self._timer.start()

    def eventFilter(self, obj, event) -> bool:
        if obj is self.editor and event.type() == QEvent.Type.FocusOut:
            self.save()
        return super().eventFilter(obj, event)

    def save(self) -> None:
        self._timer.stop()
        if self.image is None:
            return
        text = self.editor.toPlainText()
        if text == (self._loaded_text or "") and not (self._loaded_text is None and text):
            if self.state.text() == "editing…":
                self.state.setText("saved")
            return
        try:
            change = captions.write(self.image, text)
        except OSError as exc:
            self.state.setText("not saved")
            theme.set_role(self.state, "error")
            self.state.setToolTip(f"Could not write the caption file: {exc}. Check that the "
                                  f"dataset folder is writable.")
            return
        theme.set_role(self.state, "muted")
        self.state.setText("saved ✓")
        self._loaded_text = text
        if change is not None:
            self.undo_stack.push(CaptionEdit([change], f"Edit caption of {self.image.name}",
                                             self.files_changed, mergeable=True))
            self.saved.emit([self.image])

    def files_changed(self, images: list[Path]) -> None:
        if self.image in images:
            self.reload()
        self.saved.emit(images)
