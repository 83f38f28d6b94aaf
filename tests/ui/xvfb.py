"""Make a real X display available for the GUI tests: Xvfb, the xcb libraries Qt's platform
plugin needs, and fonts. Installs what is missing with apt-get when running as root (CI
containers); otherwise says exactly what to install, so the test can skip with that reason.

Why each piece (machine-notes.md §5): Qt's xcb plugin fails with a misleading "xcb-cursor0 is
needed" message when libxcb-icccm4/libxcb-keysyms1 are missing (`ldd` names them), and without a
font every glyph is drawn as a box, silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import PySide6

XCB_PLUGIN = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
# Shared library -> Debian/Ubuntu package.
LIBRARY_PACKAGES = {
    "libxcb-icccm.so.4": "libxcb-icccm4", "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-xinerama.so.0": "libxcb-xinerama0", "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-image.so.0": "libxcb-image0", "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0", "libEGL.so.1": "libegl1", "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1", "libX11-xcb.so.1": "libx11-xcb1",
}


def missing_libraries() -> list[str]:
    if not XCB_PLUGIN.is_file():
        return []
    out = subprocess.run(["ldd", str(XCB_PLUGIN)], capture_output=True, text=True).stdout
    return sorted({line.split()[0] for line in out.splitlines() if "not found" in line})


def has_fonts() -> bool:
    if not shutil.which("fc-list"):
        return False
    return bool(subprocess.run(["fc-list"], capture_output=True, text=True).stdout.strip())


def missing_packages() -> list[str]:
    packages = []
    if not (shutil.which("xvfb-run") and shutil.which("Xvfb")):
        packages.append("xvfb")
    if not shutil.which("xauth"):
        packages.append("xauth")  # xvfb-run needs it
    for lib in missing_libraries():
        packages.append(LIBRARY_PACKAGES.get(lib, lib))
    if not has_fonts():
        packages += ["fontconfig", "fonts-dejavu-core"]
    return sorted(set(packages))


def ensure() -> str:
    """'' when an X display can be run; otherwise why not (the reason to skip with)."""
    if not XCB_PLUGIN.is_file():
        return f"Qt's xcb platform plugin is not in this PySide6 ({XCB_PLUGIN})"
    packages = missing_packages()
    if not packages:
        return ""
    command = "apt-get install -y --no-install-recommends " + " ".join(packages)
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return f"needs {', '.join(packages)}; install them with: sudo {command}"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for step in (["apt-get", "update"], command.split()):
        result = subprocess.run(step, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0 and step[1] != "update":
            return f"`{' '.join(step)}` failed: {result.stderr.strip()[-400:]}"
    still = missing_packages()
    return f"still missing after installing: {', '.join(still)}" if still else ""
