"""Segmentation quality against ground-truth instance masks.

Two views, since they fail differently: pixel-level (foreground vs background: pixel accuracy, the
number the paper reports as 97.6%, IoU and Dice) rewards the right crystal area even when touching
crystals are merged; instance-level precision/recall/F1 at an IoU threshold counts a crystal as found
only when one predicted instance overlaps it well, so merges and splits show up there.
Instances are matched one-to-one by maximising total IoU (Hungarian assignment on the IoU matrix,
built from a sparse contingency table so hundreds of instances cost milliseconds); a match counts
when its IoU is >= the threshold.
Over- and under-segmentation are counted apart, since they need different fixes: a merge is a
predicted instance that holds most (>= `cover`) of two or more true ones (touching crystals left
joined), a split is a true instance that holds most of two or more predicted ones (one crystal cut).
Where the truth leaves crystals in the image unannotated (an `ignore` mask: crystals too occluded or
cut by the image edge, as the synthetic truth leaves out), a predicted instance that matches no true
one and lies mostly there is a crystal found, not a false positive: it is not scored (COCO's crowd
regions), and those pixels do not count in the pixel metrics either.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats
from scipy.optimize import linear_sum_assignment


def _check_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"predicted labels {pred.shape} and ground truth {true.shape} differ in shape")
    if pred.ndim != 2:
        raise ValueError(f"label images must be 2-D; got shape {pred.shape}")
    return pred.astype(np.int64, copy=False), true.astype(np.int64, copy=False)


def _contingency(pred: np.ndarray, true: np.ndarray):
    """Pixel counts of every (true, pred) label pair (background included) as CSR, with the ids."""
    true_ids, t_inv = np.unique(true, return_inverse=True)
    pred_ids, p_inv = np.unique(pred, return_inverse=True)
    table = sparse.coo_matrix((np.ones(t_inv.size, np.int64), (t_inv.ravel(), p_inv.ravel())),
                              shape=(true_ids.size, pred_ids.size)).tocsr()
    return table, true_ids, pred_ids


def merges_and_splits(pred_labels: np.ndarray, true_labels: np.ndarray, cover: float = 0.5
                      ) -> tuple[int, int]:
    """(merges, splits): predicted instances holding >= `cover` of the area of two or more true
    instances, and true instances holding >= `cover` of two or more predicted ones."""
    pred, true = _check_pair(pred_labels, true_labels)
    table, true_ids, pred_ids = _contingency(pred, true)
    table = table[true_ids > 0][:, pred_ids > 0].tocoo()
    area_t = np.bincount(true.ravel())[true_ids[true_ids > 0]]
    area_p = np.bincount(pred.ravel())[pred_ids[pred_ids > 0]]
    true_inside = table.data >= cover * area_t[table.row]  # this true instance lies in this prediction
    pred_inside = table.data >= cover * area_p[table.col]
    merges = np.count_nonzero(np.bincount(table.col[true_inside], minlength=area_p.size) >= 2)
    splits = np.count_nonzero(np.bincount(table.row[pred_inside], minlength=area_t.size) >= 2)
    return int(merges), int(splits)


def iou_matrix(pred_labels: np.ndarray, true_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every (true, pred) instance pair: returns (iou, true_ids, pred_ids), iou of shape
    (len(true_ids), len(pred_ids)); ids exclude background 0."""
    pred, true = _check_pair(pred_labels, true_labels)
    table, true_ids, pred_ids = _contingency(pred, true)
    area_t = np.asarray(table.sum(axis=1)).ravel()
    area_p = np.asarray(table.sum(axis=0)).ravel()
    t_off = 1 if true_ids[0] == 0 else 0
    p_off = 1 if pred_ids[0] == 0 else 0
    inter = table[t_off:, p_off:].toarray().astype(np.float64)
    union = area_t[t_off:, None] + area_p[None, p_off:] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou, true_ids[t_off:], pred_ids[p_off:]


def match_instances(pred_labels: np.ndarray, true_labels: np.ndarray,
                    iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matches (true_id, pred_id, iou) with iou >= iou_threshold (Hungarian on IoU)."""
    iou, true_ids, pred_ids = iou_matrix(pred_labels, true_labels)
    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(true_ids[r]), int(pred_ids[c]), float(iou[r, c]))
            for r, c in zip(rows, cols) if iou[r, c] >= iou_threshold and iou[r, c] > 0]


def drop_ignored(pred_labels: np.ndarray, true_labels: np.ndarray, ignore: np.ndarray | None,
                 iou_threshold: float = 0.5) -> tuple[np.ndarray, int]:
    """The predicted labels without the instances that are not scored (0 there), and how many:
    those matching no true instance at `iou_threshold` with at least half their area in `ignore`
    (unannotated crystals; pixels of true instances are never ignored)."""
    pred, true = _check_pair(pred_labels, true_labels)
    if ignore is None:
        return pred, 0
    ignore = np.asarray(ignore, bool)
    if ignore.shape != pred.shape:
        raise ValueError(f"ignore mask {ignore.shape} and labels {pred.shape} differ in shape")
    area = np.bincount(pred.ravel())
    inside = np.bincount(pred[ignore & (true == 0)], minlength=area.size)
    candidates = np.flatnonzero((inside >= 0.5 * area) & (area > 0))
    candidates = candidates[candidates > 0]
    if not candidates.size:  # nothing lies mostly there (as on labels already dropped): no matching needed
        return pred, 0
    matched = {p for _, p, _ in match_instances(pred, true, iou_threshold)}
    dropped = [c for c in candidates if c not in matched]
    if not dropped:
        return pred, 0
    return np.where(np.isin(pred, dropped), 0, pred), len(dropped)


def segmentation_metrics(pred_labels: np.ndarray, true_labels: np.ndarray,
                         iou_threshold: float = 0.5, ignore: np.ndarray | None = None) -> dict[str, float]:
    """Pixel and instance metrics of one label image against its ground truth.

    Keys: pixel_accuracy, iou, dice (foreground), precision, recall, f1 (instances at
    iou_threshold), mean_matched_iou, n_true, n_pred, n_matched, n_merges, n_splits
    (`merges_and_splits`), n_ignored (predicted instances on unannotated crystals, `ignore`, not
    scored: `drop_ignored`). Empty-vs-empty scores 1.0.
    """
    pred, n_ignored = drop_ignored(pred_labels, true_labels, ignore, iou_threshold)
    pred, true = _check_pair(pred, true_labels)
    scored = np.ones(pred.shape, bool) if ignore is None else ~(np.asarray(ignore, bool) & (true == 0))
    fg_p, fg_t = (pred > 0) & scored, true > 0
    inter = np.count_nonzero(fg_p & fg_t)
    union = np.count_nonzero(fg_p | fg_t)
    total = np.count_nonzero(fg_p) + np.count_nonzero(fg_t)
    matches = match_instances(pred, true, iou_threshold)
    n_true = int(np.unique(true[fg_t]).size)
    n_pred = int(np.unique(pred[pred > 0]).size)
    tp = len(matches)
    merges, splits = merges_and_splits(pred, true)
    precision = tp / n_pred if n_pred else float(n_true == 0)
    recall = tp / n_true if n_true else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pixel_accuracy": float(np.mean((fg_p == fg_t)[scored])) if scored.any() else 1.0,
        "iou": inter / union if union else 1.0,
        "dice": 2 * inter / total if total else 1.0,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "mean_matched_iou": float(np.mean([m[2] for m in matches])) if matches else 0.0,
        "n_true": n_true,
        "n_pred": n_pred,
        "n_matched": tp,
        "n_merges": merges,
        "n_splits": splits,
        "n_ignored": n_ignored,
    }


def pool_metrics(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Combine per-image metrics over a data set: instance counts (and merges, splits) are summed
    (micro precision/recall/F1), pixel metrics are averaged over images."""
    if not per_image:
        raise ValueError("no images to pool")
    n_true = sum(m["n_true"] for m in per_image)
    n_pred = sum(m["n_pred"] for m in per_image)
    tp = sum(m["n_matched"] for m in per_image)
    precision = tp / n_pred if n_pred else float(n_true == 0)
    recall = tp / n_true if n_true else float(n_pred == 0)
    out = {k: float(np.mean([m[k] for m in per_image])) for k in ("pixel_accuracy", "iou", "dice")}
    out.update(precision=precision, recall=recall,
               f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
               n_true=n_true, n_pred=n_pred, n_matched=tp, n_images=len(per_image),
               **{k: sum(m[k] for m in per_image) for k in ("n_merges", "n_splits", "n_ignored") if k in per_image[0]})
    return out


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent circular diameter sqrt(4 area / pi) of every instance, in pixels."""
    areas = np.bincount(np.asarray(labels, np.int64).ravel())[1:]
    return np.sqrt(4 * areas[areas > 0] / np.pi)


def size_agreement(pred_diameters: np.ndarray, true_diameters: np.ndarray) -> dict[str, float]:
    """How well a segmentation's size distribution matches the truth, where rock typing needs it:
    D10/D50/D90 (percentiles of equivalent diameter) of both, the relative D50 error and the
    two-sample Kolmogorov-Smirnov statistic (max distance of the two cumulative distributions)."""
    pred, true = np.asarray(pred_diameters, float), np.asarray(true_diameters, float)
    out = {}
    for q in (10, 50, 90):
        out[f"d{q}_pred"] = float(np.percentile(pred, q)) if pred.size else float("nan")
        out[f"d{q}_true"] = float(np.percentile(true, q)) if true.size else float("nan")
    out["d50_rel_error"] = out["d50_pred"] / out["d50_true"] - 1 if true.size else float("nan")
    if pred.size and true.size:
        ks = stats.ks_2samp(pred, true)
        out.update(ks_statistic=float(ks.statistic), ks_pvalue=float(ks.pvalue))
    else:
        out.update(ks_statistic=float("nan"), ks_pvalue=float("nan"))
    return out
