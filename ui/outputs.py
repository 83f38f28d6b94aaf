"""What the artist does with a finished LoRA: show it in the file manager, copy it to the LoRA
folders of other apps (remembered in the app settings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QWidget

from studio.runs import deliver
from ui.app_settings import SettingsStore


def open_folder(path: Path) -> bool:
    """Open `path` (a folder, or a file's folder) in the system file manager."""
    folder = path if path.is_dir() else path.parent
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


def copy_to(parent: QWidget, adapter: Path, folder: Path) -> str:
    """Copy with a confirmation before replacing; returns a message for the status bar."""
    existing = deliver.conflicts(adapter, folder)
    if existing:
        answer = QMessageBox.question(
            parent, "Replace the LoRA?", f"{existing[0].name} already exists in {folder}.\n\n"
            f"Replace it with this one?")
        if answer != QMessageBox.StandardButton.Yes:
            return "Copy cancelled."
    try:
        copies = deliver.copy_lora(adapter, folder)
    except OSError as exc:
        QMessageBox.warning(parent, "Could not copy the LoRA",
                            f"Copying to {folder} failed: {exc}\n\nCheck that the folder exists "
                            f"and is writable, or choose another one.")
        return "Copy failed."
    return f"Copied {copies[0].name} to {folder}"


def copy_menu(parent: QWidget, adapter: Callable[[], Path | None], store: SettingsStore,
              report: Callable[[str], None]) -> QMenu:
    """A menu of remembered LoRA folders plus "Choose folder…"; rebuilt each time it opens so
    folders remembered elsewhere appear."""
    menu = QMenu(parent)

    def rebuild() -> None:
        menu.clear()
        for folder in store.data.lora_folders:
            action = menu.addAction(folder)
            action.setToolTip(f"Copy the LoRA into {folder}")
            action.triggered.connect(lambda _=False, f=folder: do_copy(Path(f)))
        if store.data.lora_folders:
            menu.addSeparator()
        menu.addAction("Choose folder… (ComfyUI models/loras, A1111 models/Lora)",
                       choose)

    def choose() -> None:
        chosen = QFileDialog.getExistingDirectory(parent, "Copy the LoRA to…")
        if chosen:
            folder = deliver.lora_folder_for(Path(chosen))
            store.data.remember_lora_folder(folder)
            store.save()
            do_copy(folder)

    def do_copy(folder: Path) -> None:
        path = adapter()
        if path is None or not path.is_file():
            report("The LoRA file is missing; was the run folder moved?")
            return
        report(copy_to(parent, path, folder))

    menu.aboutToShow.connect(rebuild)
    rebuild()
    return menu

