"""Work around a reference-count bug of PySide6 6.12.0 on Python 3.11 (applied on `import ui`).

Measured here: every call of a C++ method returning void (QPainterPath.lineTo, QLabel.setText,
QProgressBar.setValue, ...) takes one reference from `None` without giving it back. The wheel is
tagged cp310-abi3 but behaves as if built for Python >= 3.12, where None is immortal (PEP 683)
and returning it needs no reference. On 3.11 None's count (≈5,000 after start-up) reaches zero
after that many calls and the interpreter aborts with "Fatal Python error: none_dealloc" — within
seconds while the loss plot repaints.

The fix gives None (and, defensively, True/False) 2**40 extra references once, i.e. makes them
as immortal as Python 3.12 does. It runs only when the leak is detected, so a fixed PySide6 or
Python >= 3.12 is left alone. tests/ui/test_compat.py guards it.
"""

from __future__ import annotations

import ctypes
import sys

EXTRA_REFS = 1 << 40


def leaks_none(calls: int = 50) -> bool:
    from PySide6.QtCore import QPointF

    point = QPointF()
    before = sys.getrefcount(None)
    for _ in range(calls):
        point.setX(1.0)  # a void method
    return sys.getrefcount(None) < before - calls // 2


def apply() -> bool:
    """Returns True when the workaround was needed and applied."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython" or not leaks_none():
        return False
    for obj in (None, True, False):
        # ob_refcnt is the first field of every PyObject in release builds of CPython 3.11.
        ctypes.c_ssize_t.from_address(id(obj)).value += EXTRA_REFS
    return True


applied = apply()
