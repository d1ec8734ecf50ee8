"""Fine-tune SAM on a scene data set's instance masks ("custom-tuned SAM", paper section 2.1.2).

Scenes are split by image into training and held-out parts (seeded). Every image is cut into the same
tiles `SamSegmenter` uses, so the model learns crystals at the scale it will see them. Each step
takes one tile and up to `instances` of its ground-truth crystals and prompts SAM with each
crystal's bounding box (slightly jittered) or with one point deep inside it ("mixed" alternates, so
both the interactive and the automatic point-grid use improve). Loss: binary cross-entropy + Dice
on the mask logits (for a point prompt, the best of SAM's three candidate masks, as in SAM's own
training) + MSE of the IoU head against the real IoU, since the automatic mask generator filters
masks by that prediction. AdamW on the parts named in `trainable` (default the mask decoder);
when the image encoder is frozen its embeddings are computed once and cached.
The architecture is whatever `Sam` object is passed in, so tests tune a tiny SAM; the CLI builds one
from `sam_model_registry`. The checkpoint is the full state dict, loadable with
`sam_model_registry[model_type](checkpoint=...)` or `SamSegmenter(checkpoint=...)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm import tqdm

from mcn import cli
from mcn.data.scenes import iter_scenes
from mcn.errors import DataError
from mcn.segment.metrics import pool_metrics, segmentation_metrics
from mcn.segment.sam import SamSegmenter, load_sam, resolve_device, tile_boxes, to_rgb_uint8
from mcn.files import atomic_path, write_text

PARTS = ("mask_decoder", "prompt_encoder", "image_encoder")
PROMPTS = ("box", "point", "mixed")


class _Tile:
    """One tile of a scene: its image, instance labels and (lazily) SAM embedding."""

    def __init__(self, image: np.ndarray, labels: np.ndarray):
        self.image = image
        self.labels = labels
        self.embedding = None


def make_tiles(scenes: list[tuple[np.ndarray, np.ndarray]], tile_size: int, overlap: int,
               min_area: int) -> list[_Tile]:
    """Tiles of every (image, labels) scene that hold at least one instance of >= min_area pixels."""
    tiles = []
    for image, labels in scenes:
        for r0, c0, r1, c1 in tile_boxes(image.shape, tile_size, overlap):
            tile = _Tile(image[r0:r1, c0:c1], labels[r0:r1, c0:c1])
            if _instances(tile.labels, min_area).size:
                tiles.append(tile)
    return tiles


def _instances(labels: np.ndarray, min_area: int) -> np.ndarray:
    areas = np.bincount(labels.ravel())
    ids = np.flatnonzero(areas >= max(min_area, 1))
    return ids[ids > 0]


def split_scenes(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) image indices; at least one image on each side."""
    if n < 2:
        raise DataError(f"fine-tuning needs at least 2 images (train + held-out); got {n}")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction in (0, 1); got {holdout}")
    order = np.random.default_rng(seed).permutation(n)
    n_hold = min(max(1, int(round(holdout * n))), n - 1)
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def _prompts(labels: np.ndarray, ids: np.ndarray, rng: np.random.Generator,
             jitter: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target masks (n,h,w), boxes (n,4) xyxy with jitter, points (n,2) xy deep inside each."""
    masks = labels[None] == ids[:, None, None]
    slices = ndi.find_objects(labels)
    boxes, points = [], []
    for i in ids:
        rs, cs = slices[i - 1]
        box = np.array([cs.start, rs.start, cs.stop, rs.stop], np.float64)
        size = np.array([cs.stop - cs.start, rs.stop - rs.start] * 2)
        boxes.append(box + rng.normal(0, jitter, 4) * size)
        dist = ndi.distance_transform_edt(np.pad(labels[rs, cs] == i, 1))[1:-1, 1:-1]
        r, c = np.nonzero(dist >= 0.5 * dist.max())
        k = rng.integers(r.size)
        points.append([cs.start + c[k] + 0.5, rs.start + r[k] + 0.5])
    return masks, np.asarray(boxes), np.asarray(points, np.float64)


class _Runner:
    """Runs SAM's prompt path on tiles: embeddings, prompt encoding, decoding to tile-size logits."""

    def __init__(self, model: Sam, device: torch.device):
        self.model = model
        self.device = device
        self.transform = ResizeLongestSide(model.image_encoder.img_size)

    def embed(self, tile: _Tile, cache: bool) -> torch.Tensor:
        if cache and tile.embedding is not None:
            return tile.embedding
        rgb = self.transform.apply_image(to_rgb_uint8(tile.image))
        x = torch.as_tensor(rgb, device=self.device).permute(2, 0, 1)[None].float()
        emb = self.model.image_encoder(self.model.preprocess(x))
        if cache:
            tile.embedding = emb.detach()
        return emb

    def decode(self, emb: torch.Tensor, tile: _Tile, boxes: np.ndarray | None,
               points: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (n, k, h, w) at tile size and predicted IoUs (n, k); k = 3 for points."""
        shape = tile.image.shape
        box_t = pts = None
        if boxes is not None:
            box_t = torch.as_tensor(self.transform.apply_boxes(boxes, shape), dtype=torch.float32,
                                    device=self.device)
        if points is not None:
            coords = torch.as_tensor(self.transform.apply_coords(points, shape), dtype=torch.float32,
                                     device=self.device)[:, None, :]
            pts = (coords, torch.ones(coords.shape[:2], dtype=torch.int, device=self.device))
        sparse, dense = self.model.prompt_encoder(points=pts, boxes=box_t, masks=None)
        low, iou_pred = self.model.mask_decoder(
            image_embeddings=emb, image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=boxes is None)
        input_size = self.transform.get_preprocess_shape(*shape, self.model.image_encoder.img_size)
        return self.model.postprocess_masks(low, input_size, shape), iou_pred


def _loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + Dice per candidate mask, the best candidate per prompt, + MSE of the IoU head."""
    target = target[:, None].expand_as(logits).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-2, -1))
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((-2, -1))
    dice = 1 - (2 * inter + 1) / (prob.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    with torch.no_grad():
        hard = logits > 0
        real_iou = (hard & (target > 0)).sum((-2, -1)) / ((hard | (target > 0)).sum((-2, -1)).clamp(min=1))
    return (bce + dice).min(dim=1).values.mean() + F.mse_loss(iou_pred, real_iou.float())


def _set_trainable(model: Sam, trainable: tuple[str, ...]) -> list[torch.nn.Parameter]:
    unknown = set(trainable) - set(PARTS)
    if unknown or not trainable:
        raise ValueError(f"trainable must name some of {PARTS}; got {trainable}")
    params = []
    for part in PARTS:
        for p in getattr(model, part).parameters():
            p.requires_grad_(part in trainable)
            if part in trainable:
                params.append(p)
    return params


def finetune(model: Sam, scenes: list[tuple[np.ndarray, np.ndarray]], epochs: int = 5,
             lr: float = 1e-4, weight_decay: float = 1e-4, prompt: str = "mixed",
             trainable: tuple[str, ...] = ("mask_decoder",), instances: int = 16,
             tile_size: int = 1024, overlap: int = 256, min_area: int = 30, jitter: float = 0.05,
             device: str | None = None, seed: int = 0, progress: bool = True) -> list[float]:
    """Train `model` in place on (image, labels) scenes; returns the mean loss of each epoch."""
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}; got {prompt!r}")
    dev = resolve_device(device)
    model.to(dev)
    params = _set_trainable(model, tuple(trainable))
    tiles = make_tiles(scenes, tile_size, overlap, min_area)
    if not tiles:
        raise DataError(f"no training tile holds an instance of >= {min_area} pixels")
    runner = _Runner(model, dev)
    cache = "image_encoder" not in trainable
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    history, step = [], 0
    for epoch in range(epochs):
        model.train()
        losses = []
        for i in tqdm(rng.permutation(len(tiles)), desc=f"epoch {epoch + 1}/{epochs}",
                      disable=not progress, leave=False):
            tile = tiles[i]
            ids = _instances(tile.labels, min_area)
            ids = rng.choice(ids, size=min(instances, ids.size), replace=False)
            masks, boxes, points = _prompts(tile.labels, ids, rng, jitter)
            use_box = prompt == "box" or (prompt == "mixed" and step % 2 == 0)
            with torch.set_grad_enabled(not cache):
                emb = runner.embed(tile, cache)
            logits, iou_pred = runner.decode(emb, tile, boxes if use_box else None,
                                             None if use_box else points)
            loss = _loss(logits, iou_pred, torch.as_tensor(masks, device=dev))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        history.append(float(np.mean(losses)))
    model.eval()
    return history


@torch.no_grad()
def prompted_iou(model: Sam, scenes: list[tuple[np.ndarray, np.ndarray]], prompt: str = "box",
                 tile_size: int = 1024, overlap: int = 256, min_area: int = 30,
                 device: str | None = None, seed: int = 0) -> float:
    """Mean IoU of SAM's mask for each ground-truth crystal given its exact box (or one inner
    point, taking SAM's most confident of three masks): the quality tuning targets directly."""
    dev = resolve_device(device)
    model.to(dev).eval()
    runner = _Runner(model, dev)
    rng = np.random.default_rng(seed)
    ious = []
    for tile in make_tiles(scenes, tile_size, overlap, min_area):
        ids = _instances(tile.labels, min_area)
        masks, boxes, points = _prompts(tile.labels, ids, rng, jitter=0.0)
        emb = runner.embed(tile, cache=False)
        for start in range(0, ids.size, 64):
            part = slice(start, start + 64)
            logits, iou_pred = runner.decode(emb, tile, boxes[part] if prompt == "box" else None,
                                             points[part] if prompt == "point" else None)
            best = logits[torch.arange(logits.shape[0]), iou_pred.argmax(1)] > 0
            target = torch.as_tensor(masks[part], device=dev)
            inter = (best & target).sum((-2, -1)).float()
            union = (best | target).sum((-2, -1)).float().clamp(min=1)
            ious.extend((inter / union).cpu().tolist())
    return float(np.mean(ious)) if ious else float("nan")


def evaluate(model: Sam, scenes: list[tuple[np.ndarray, np.ndarray]], tile_size: int = 1024,
             overlap: int = 256, min_area: int = 30, device: str | None = None,
             automatic: bool = True, **segmenter_kwargs) -> dict[str, float]:
    """Held-out quality: prompted IoU (box and point) and, with `automatic`, the pooled
    `segmentation_metrics` of `SamSegmenter` (automatic mask generation) on the whole images."""
    out = {f"prompted_iou_{p}": prompted_iou(model, scenes, p, tile_size, overlap, min_area, device)
           for p in ("box", "point")}
    if automatic:
        segmenter = SamSegmenter(model, tile_size=tile_size, overlap=overlap, device=device,
                                 min_area=min_area, **segmenter_kwargs)
        pooled = pool_metrics([segmentation_metrics(segmenter.segment(img), lab) for img, lab in scenes])
        out.update({k: pooled[k] for k in ("pixel_accuracy", "iou", "dice", "precision", "recall", "f1")})
    return out


def save_checkpoint(model: Sam, path: str | Path, overwrite: bool = False) -> Path:
    """Write the state dict atomically; refuses an existing file unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    return path


def _write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mcn.segment.finetune", description=__doc__.split("\n")[0])
    cli.data(parser, required=True)
    cli.sam(parser, required=True, model_types=sorted(sam_model_registry))
    cli.out(parser, required=True, metavar="FILE.pth")
    cli.overwrite(parser)
    cli.epochs(parser, 5)
    parser.add_argument("--lr", type=float, default=1e-4)
    cli.val_fraction(parser, 0.2)
    cli.seed(parser)
    cli.device(parser)
    parser.add_argument("--prompt", choices=PROMPTS, default="mixed")
    parser.add_argument("--train", default="mask_decoder",
                        help=f"comma-separated parts to train, from {','.join(PARTS)}")
    parser.add_argument("--instances", type=int, default=16, help="crystals per training step")
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=256)
    parser.add_argument("--min-area", type=int, default=30, help="smallest crystal used, in pixels")
    parser.add_argument("--points-per-side", type=int, default=32, help="automatic evaluation grid")
    parser.add_argument("--no-automatic-eval", action="store_true",
                        help="skip the (slow on CPU) automatic-mask evaluation of held-out images")
    cli.quiet(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command line: fine-tune SAM on a scene folder, save the checkpoint, report held-out gain."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out}: exists; pass --overwrite to replace it")
        model = load_sam(args.sam_checkpoint, args.sam_model_type)
        scenes = [(s.image, s.labels)
                  for s in tqdm(iter_scenes(args.data), desc="reading scenes", disable=args.quiet)]
        train_idx, held_idx = split_scenes(len(scenes), args.val_fraction, args.seed)
        geometry = dict(tile_size=args.tile_size, overlap=args.overlap, min_area=args.min_area,
                        device=args.device)
        held = [scenes[i] for i in held_idx]
        eval_kwargs = dict(geometry, automatic=not args.no_automatic_eval,
                           points_per_side=args.points_per_side)
        before = evaluate(model, held, **eval_kwargs)
        history = finetune(model, [scenes[i] for i in train_idx], epochs=args.epochs, lr=args.lr,
                           prompt=args.prompt, trainable=tuple(args.train.split(",")),
                           instances=args.instances, seed=args.seed, progress=not args.quiet, **geometry)
        after = evaluate(model, held, **eval_kwargs)
        save_checkpoint(model, out, overwrite=args.overwrite)
    except (DataError, FileExistsError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    report = {"data": str(args.data), "checkpoint": str(args.sam_checkpoint), "model_type": args.sam_model_type,
              "train_images": len(train_idx), "heldout_images": len(held_idx), "epochs": args.epochs,
              "loss_per_epoch": history, "before": before, "after": after}
    _write_json(out.with_name(out.name + ".json"), report)
    print(f"trained {args.train} on {len(train_idx)} images for {args.epochs} epochs "
          f"(loss {history[0]:.4f} -> {history[-1]:.4f}); held-out {len(held_idx)} images:")
    for key in before:
        print(f"  {key:18s} {before[key]:.4f} -> {after[key]:.4f}  ({after[key] - before[key]:+.4f})")
    print(f"wrote {out} and {out.name}.json")


if __name__ == "__main__":
    main()
