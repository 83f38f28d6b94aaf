"""The saved epoch × strength grid: small cells enlarged with crisp pixels, labels that never
overlap each other or run off the image, and cell positions the GUI can find."""

from __future__ import annotations

import pytest
from PIL import Image

from studio import grid


def cells(rows: int, cols: int, size: int = 64) -> list[list[Image.Image]]:
    out = []
    for r in range(rows):
        row = []
        for c in range(cols):
            cell = Image.new("RGB", (size, size), (40 * c, 60 * r, 200))
            cell.putpixel((0, 0), (255, 255, 255))  # one odd pixel: enlargement must keep it sharp
            row.append(cell)
        out.append(row)
    return out


def ink_columns(image: Image.Image, top: int, bottom: int) -> set[int]:
    gray = image.convert("L")
    return {x for x in range(image.width) for y in range(top, bottom) if gray.getpixel((x, y)) < 128}


def test_small_cells_are_enlarged_with_crisp_pixels():
    assert grid.cell_scale((64, 64)) == 4 and grid.cell_scale((512, 512)) == 1
    image = grid.compose(cells(2, 3), ["epoch 1", "epoch 2"], ["0", "0.5", "1"])
    box = grid.cell_box(image.size, (64, 64), 2, 3, 1, 2)
    assert (box[2] - box[0], box[3] - box[1]) == (256, 256)
    cell = image.crop(box)
    assert cell.getpixel((0, 0)) == cell.getpixel((3, 3)) == (255, 255, 255)  # 4×4 block
    assert cell.getpixel((4, 4)) == (80, 60, 200)


def label_band(image: Image.Image, cells_top: int) -> tuple[int, int]:
    """The block of ink rows just above the cells (the column labels), below the title."""
    gray = image.convert("L")
    inked = [any(gray.getpixel((x, y)) < 128 for x in range(image.width)) for y in range(cells_top)]
    y = cells_top - 1
    while y >= 0 and not inked[y]:
        y -= 1
    bottom, blank = y + 1, 0
    while y >= 0 and blank < 3:
        blank = blank + 1 if not inked[y] else 0
        y -= 1
    return y + blank + 1, bottom


@pytest.mark.parametrize("strengths", [
    [f"strength {s}" for s in ("0", "0.25", "0.5", "0.75", "1", "1.25")],
    [f"strength {s} of the LoRA named my-very-long-style-name" for s in ("0", "0.5", "1")] * 2,
])
def test_column_labels_and_title_never_overlap_or_run_off(strengths):
    title = "a very long prompt about a lighthouse on a cliff at dusk, " * 3 + "(seed 7, 25 steps)"
    image = grid.compose(cells(3, 6), ["my-style-000001", "my-style-000002", "my-style"],
                         strengths, title=title)
    first = grid.cell_box(image.size, (64, 64), 3, 6, 0, 0)
    assert max(ink_columns(image, 0, first[1])) < image.width - 4, "nothing runs off the edge"
    header = ink_columns(image, *label_band(image, first[1]))
    assert header, "labels were drawn"
    # A blank gap at every boundary between two columns: labels stay inside their own column.
    for c in range(1, 6):
        x = first[0] + c * (first[2] - first[0])
        assert not header & {x - 1, x, x + 1}, f"labels touch across the boundary of column {c}"
