"""Compose labelled image grids (rows: checkpoints, columns: strengths) — the way to pick an epoch."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

DEFAULT_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


MIN_CELL_PX = 256  # cells of small models (the 64 px pocket model) are enlarged to at least this
LINE_GAP = 4


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def cell_scale(cell: tuple[int, int]) -> int:
    """The whole-number enlargement of a cell in the saved grid (nearest-neighbour, so pixels stay
    crisp): 4 for 64 px cells, 1 from 256 px up. The GUI asks this too, to find the cells."""
    return max(1, math.ceil(MIN_CELL_PX / max(1, max(cell))))


def shown_cell(cell: tuple[int, int]) -> tuple[int, int]:
    k = cell_scale(cell)
    return cell[0] * k, cell[1] * k


def _wrap(text: str, font, width: float, measure: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap into `width` px; a word longer than a line is broken by characters."""
    lines: list[str] = []
    for word in text.split():
        while measure.textlength(word, font=font) > width and len(word) > 1:
            cut = max(1, next((i for i in range(len(word), 0, -1)
                               if measure.textlength(word[:i], font=font) <= width), 1))
            if lines and not lines[-1]:
                lines.pop()
            lines.append(word[:cut])
            word = word[cut:]
        if lines and measure.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _fitted(texts: list[str], width: float, start_px: int, max_lines: int,
            measure: ImageDraw.ImageDraw) -> tuple[ImageFont.ImageFont, int, list[list[str]]]:
    """The largest font (down to 10 px) at which every text wraps into `max_lines` lines."""
    px = start_px
    while True:
        font = _font(px)
        wrapped = [_wrap(t, font, width, measure) for t in texts]
        if px <= 10 or all(len(w) <= max_lines for w in wrapped):
            return font, px, wrapped
        px -= 1


def compose(cells: list[list[Image.Image]], row_labels: list[str], col_labels: list[str],
            title: str = "") -> Image.Image:
    """One image: the title, a header row of column labels, a left column of row labels, then the
    cells (enlarged to MIN_CELL_PX for small models). Labels wrap and shrink to fit their cell,
    so they never overlap or run off the image."""
    rows, cols = len(cells), len(cells[0]) if cells else 0
    if len(row_labels) != rows or len(col_labels) != cols or any(len(r) != cols for r in cells):
        raise ValueError("grid labels do not match the cells")
    k = cell_scale(cells[0][0].size)
    w, h = shown_cell(cells[0][0].size)
    # Labels scale with the cells, so they stay legible in a saved grid of 512 px images.
    font_px = max(14, min(40, w // 10))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_font, row_px, row_lines = _fitted(row_labels, 2 * w - 16, font_px, 3, measure)
    label_w = max((int(measure.textlength(line, font=row_font)) for lines in row_lines
                   for line in lines), default=0) + 16
    col_font, col_px, col_lines = _fitted(col_labels, w - 8, font_px, 2, measure)
    total_w = label_w + cols * w
    title_font, title_px, title_lines = _fitted([title], total_w - 16, font_px, 3, measure)
    title_h = len(title_lines[0]) * (title_px + LINE_GAP) + 12 if title else 0
    header_h = max(len(lines) for lines in col_lines) * (col_px + LINE_GAP) + 12
    grid = Image.new("RGB", (total_w, title_h + header_h + rows * h), "white")
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(title_lines[0] if title else []):
        draw.text((8, 6 + i * (title_px + LINE_GAP)), line, fill="black", font=title_font)
    for c, lines in enumerate(col_lines):
        top = title_h + header_h - 6 - len(lines) * (col_px + LINE_GAP)
        for i, line in enumerate(lines):
            x = label_w + c * w + (w - measure.textlength(line, font=col_font)) / 2
            draw.text((x, top + i * (col_px + LINE_GAP)), line, fill="black", font=col_font)
    for r, lines in enumerate(row_lines):
        y = title_h + header_h + r * h + (h - len(lines) * (row_px + LINE_GAP)) / 2
        for i, line in enumerate(lines):
            draw.text((8, y + i * (row_px + LINE_GAP)), line, fill="black", font=row_font)
        for c, cell in enumerate(cells[r]):
            big = cell.convert("RGB")
            if k > 1:
                big = big.resize((w, h), Image.Resampling.NEAREST)
            grid.paste(big, (label_w + c * w, title_h + header_h + r * h))
    return grid


def cell_box(grid_size: tuple[int, int], cell_size: tuple[int, int], rows: int, cols: int,
             row: int, col: int) -> tuple[int, int, int, int]:
    """Where cell (row, col) of `cell_size` (as generated) sits in a composed grid (labels are
    left and top of the cells)."""
    gw, gh = grid_size
    w, h = shown_cell(cell_size)
    left, top = gw - cols * w, gh - rows * h
    return (left + col * w, top + row * h, left + (col + 1) * w, top + (row + 1) * h)
