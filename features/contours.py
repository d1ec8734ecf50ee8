"""Closed iso-contours of many small grids at once, equal to scikit-image's `find_contours`.

`find_contours` assembles its marching-squares segments in a Python loop, which cost more than the
rest of a crystal's outline measures. Here the segments of a whole chunk of grids are made on one
mosaic with the same case table and the same edge-point arithmetic, linked by the id of the grid
edge they cross, and ordered by pointer jumping, so a grid costs array work, not Python calls.
"""

from __future__ import annotations

import numpy as np

# scikit-image's marching-squares segments per cell case (bits: 1 upper left, 2 upper right, 4 lower
# left, 8 lower right above the level; saddles 6 and 9 with fully_connected="low"), as (from, to)
# cell edges: 0 top, 1 bottom, 2 left, 3 right; -1 where a case has no (second) segment
_TOP, _BOTTOM, _LEFT, _RIGHT = 0, 1, 2, 3
_FIRST = np.array([(-1, -1), (_TOP, _LEFT), (_RIGHT, _TOP), (_RIGHT, _LEFT), (_LEFT, _BOTTOM), (_TOP, _BOTTOM),
                   (_RIGHT, _TOP), (_RIGHT, _BOTTOM), (_BOTTOM, _RIGHT), (_TOP, _LEFT), (_BOTTOM, _TOP),
                   (_BOTTOM, _LEFT), (_LEFT, _RIGHT), (_TOP, _RIGHT), (_LEFT, _TOP), (-1, -1)])
_SECOND = {6: (_LEFT, _BOTTOM), 9: (_BOTTOM, _RIGHT)}


def closed_contours(grids: list[np.ndarray], level: float) -> list[np.ndarray | None]:
    """For each 2-D grid, `find_contours(grid, level)[0]` where that is the grid's only contour
    and closed; None where it is not (no contour, several, one open at the border, or a grid value
    exactly at the level, whose degenerate segments scikit-image drops): ask `find_contours` then.

    The contour starts where scikit-image's assembly closes it, at the end point of the grid's
    last-generated segment, and runs in segment direction (lower values on the left). The grids
    are laid out on a zero background, so the level must be above 0.
    """
    if not level > 0:
        raise ValueError(f"closed_contours traces levels above 0 (the background); got {level}")
    if not grids:
        return []
    n = len(grids)
    heights = np.array([g.shape[0] for g in grids])
    width = max(g.shape[1] for g in grids) + 1
    starts = np.concatenate([[0], np.cumsum(heights + 1)])  # one zero row after each grid
    mosaic = np.zeros((starts[-1], width))
    last_col = np.zeros(starts[-1], np.intp)  # each mosaic row's grid's last column
    for k, grid in enumerate(grids):
        mosaic[starts[k]:starts[k] + grid.shape[0], :grid.shape[1]] = grid
        last_col[starts[k]:starts[k + 1]] = grid.shape[1] - 1
    above = mosaic > level
    # open at the border (a border value above the level) or degenerate (a value at the level)
    rows = np.arange(len(mosaic))
    off = (mosaic == level).any(axis=1) | above[:, 0] | above[rows, last_col]
    top, bottom = starts[:-1], starts[:-1] + heights - 1
    usable = ~(np.logical_or.reduceat(off, top) | above[top].any(axis=1) | above[bottom].any(axis=1))
    # the zero row before a grid whose top row is above the level holds segments that would count
    # as the grid above's: that grid's contour cannot be told apart, so find_contours traces it
    usable[:-1] &= ~above[top[1:]].any(axis=1)
    case = (above[:-1, :-1] * np.uint8(1) + above[:-1, 1:] * np.uint8(2) + above[1:, :-1] * np.uint8(4)
            + above[1:, 1:] * np.uint8(8)).ravel()
    cells = np.flatnonzero((case != 0) & (case != 15))  # row-major: scikit-image's generation order
    if not len(cells):
        return [None] * n
    cols = width - 1
    row, col = np.divmod(cells, cols)
    saddle = np.flatnonzero((case[cells] == 6) | (case[cells] == 9))
    ends = np.concatenate([_FIRST[case[cells]], np.array([_SECOND[c] for c in case[cells[saddle]]]).reshape(-1, 2)])
    seg_cell = np.concatenate([np.arange(len(cells)), saddle])
    seg_row, seg_col = row[seg_cell], col[seg_cell]
    edge_ids = [_edge_id(seg_row, seg_col, ends[:, j], mosaic.shape) for j in (0, 1)]
    owner = np.searchsorted(starts, seg_row, side="right") - 1
    # each crossed edge starts exactly one segment when the contour is closed; other entries unset
    by_start = np.empty(2 * mosaic.size, np.intp)
    by_start[edge_ids[0]] = np.arange(len(seg_cell))
    following = by_start[edge_ids[1]]
    following[(following < 0) | (following >= len(seg_cell))] = -1
    following[edge_ids[0][np.maximum(following, 0)] != edge_ids[1]] = -1
    counts = np.bincount(owner, minlength=n)
    # each grid's last-generated segment: its last active cell's (second, for a saddle) segment
    cell_owner = owner[:len(cells)]
    last_cell = np.searchsorted(cell_owner, np.arange(n), side="right") - 1
    has = counts > 0
    last = np.full(n, -1)
    last[has] = last_cell[has]
    second_of = np.full(len(cells), -1)
    second_of[saddle] = len(cells) + np.arange(len(saddle))
    last[has] = np.where(second_of[last[has]] >= 0, second_of[last[has]], last[has])
    usable &= has
    usable[np.unique(owner[following < 0])] = False
    # pointer jumping towards the last segment: distance of every segment from it
    jump = np.where(following < 0, np.arange(len(following)), following)
    jump[last[has]] = last[has]
    dist = np.ones(len(jump), np.int64)
    dist[last[has]] = 0
    for _ in range(int(np.ceil(np.log2(max(2, counts.max())))) + 1):
        dist, jump = dist + dist[jump], jump[jump]
    usable[np.unique(owner[jump != last[owner]])] = False  # more than one cycle
    points = _edge_points(mosaic, edge_ids[1], starts[owner], level)
    # grid k's contour: the end of its last segment, then the ends of the segments at distance
    # m - 1, ..., 0 from it (m + 1 points); the unusable grids' distances are meaningless
    offsets = np.concatenate([[0], np.cumsum(counts + 1)])
    contours = np.zeros((offsets[-1], 2))
    contours[offsets[:-1][usable]] = points[last[usable]]
    kept = np.flatnonzero(usable[owner])
    contours[(offsets[owner] + counts[owner] - dist)[kept]] = points[kept]
    return [part if ok else None for part, ok in zip(np.split(contours, offsets[1:-1]), usable)]


def _edge_id(row: np.ndarray, col: np.ndarray, side: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Id of the cell side crossed: horizontal edges (r, c)-(r, c + 1) are r * w + c, vertical
    edges (r, c)-(r + 1, c) come after them, h * w + r * w + c."""
    h, w = shape
    r = row + (side == _BOTTOM)
    c = col + (side == _RIGHT)
    return np.where(side <= _BOTTOM, r * w + c, h * w + r * w + c)


def _edge_points(mosaic: np.ndarray, ids: np.ndarray, top_row: np.ndarray, level: float) -> np.ndarray:
    """(row, col) where the level crosses each edge, in its grid's coordinates, with scikit-image's
    arithmetic: the lower (left) corner's coordinate plus (level - v0) / (v1 - v0)."""
    h, w = mosaic.shape
    vertical = ids >= h * w
    r, c = np.divmod(np.where(vertical, ids - h * w, ids), w)
    flat = mosaic.ravel()
    v0 = flat[r * w + c]
    v1 = flat[np.where(vertical, (r + 1) * w + c, r * w + c + 1)]
    fraction = (level - v0) / (v1 - v0)
    rows = (r - top_row).astype(np.float64)
    cols = c.astype(np.float64)
    return np.stack([np.where(vertical, rows + fraction, rows), np.where(vertical, cols, cols + fraction)], axis=1)
