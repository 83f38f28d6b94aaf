"""Compose labelled image grids (rows: checkpoints, columns: strengths) — the way to pick an epoch."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

DEFAULT_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def compose(cells: list[list[Image.Image]], row_labels: list[str], col_labels: list[str],
            title: str = "") -> Image.Image:
    """One image: a header row of column labels, a left column of row labels, then the cells."""
    rows, cols = len(cells), len(cells[0]) if cells else 0
    if len(row_labels) != rows or len(col_labels) != cols or any(len(r) != cols for r in cells):
        raise ValueError("grid labels do not match the cells")
    w, h = cells[0][0].size
    # Labels scale with the cells, so they stay legible in a saved grid of 512 px images.
    font_px = max(12, min(48, w // 12))
    font = _font(font_px)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((int(measure.textlength(t, font=font)) for t in row_labels), default=0) + 16
    title_h = font_px + 12 if title else 0
    header_h = font_px + 12
    grid = Image.new("RGB", (label_w + cols * w, title_h + header_h + rows * h), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((8, 6), title, fill="black", font=font)
    for c, text in enumerate(col_labels):
        x = label_w + c * w + (w - measure.textlength(text, font=font)) / 2
        draw.text((x, title_h + 6), text, fill="black", font=font)
    for r, text in enumerate(row_labels):
        y = title_h + header_h + r * h + (h - font_px) / 2
        draw.text((8, y), text, fill="black", font=font)
        for c, cell in enumerate(cells[r]):
            grid.paste(cell.convert("RGB"), (label_w + c * w, title_h + header_h + r * h))
    return grid


def cell_box(grid_size: tuple[int, int], cell_size: tuple[int, int], rows: int, cols: int,
             row: int, col: int) -> tuple[int, int, int, int]:
    """Where cell (row, col) sits in a composed grid (labels are left and top of the cells)."""
    gw, gh = grid_size
    w, h = cell_size
    left, top = gw - cols * w, gh - rows * h
    return (left + col * w, top + row * h, left + (col + 1) * w, top + (row + 1) * h)
