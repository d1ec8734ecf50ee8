"""Figures and metric tables of a cross-validation run (paper section 5, Figs 5-9).

Pooled figures (confusion matrix, precision-recall and ROC curves, scene overlay) use each crystal's
out-of-fold prediction: every crystal is scored once, by the fold model that never trained on it.
The t-SNE, activation and saliency figures show one model (fold 0's): embedding spaces of different
fold models are not comparable, so mixing them would draw meaningless clusters.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve  # noqa: E402

from mcn.files import save_figure, write_text  # noqa: E402
from mcn.metrics import SUMMARY_METRICS, confusion, metric_names  # noqa: E402

MAX_STAGES = 6
"""Most activation-map columns: deep baselines have more resolution stages than fit a page."""


def _colours(n: int) -> list:
    return [plt.get_cmap("tab10")(i % 10) for i in range(n)]


def out_of_fold(results, n_crystals: int) -> np.ndarray:
    """(n_crystals, n_classes) probabilities from the fold whose test part held each crystal; NaN rows
    for crystals no fold tested (the holdout split tests only a tenth)."""
    out = np.full((n_crystals, results[0].probabilities.shape[1]), np.nan, np.float32)
    for r in results:
        out[r.test_index] = r.probabilities
    return out


def plot_confusion(y_true: np.ndarray, probabilities: np.ndarray, class_names, path) -> Path:
    """Counts and row-normalised (recall per true class) confusion matrices side by side."""
    counts = confusion(y_true, probabilities, len(class_names))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, values, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], rates, "row-normalised", ".2f")):
        ax.imshow(values, cmap="Blues", vmin=0, vmax=values.max() or 1)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, format(v, fmt), ha="center", va="center",
                    color="white" if v > 0.6 * (values.max() or 1) else "black")
        ticks = np.arange(len(class_names))
        ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names,
               xlabel="predicted", ylabel="true", title=f"Confusion matrix ({title})")
    return save_figure(fig, path, bbox_inches="tight")


def plot_pr_curves(y_true: np.ndarray, probabilities: np.ndarray, class_names, path) -> Path:
    """One-vs-rest precision-recall curve per class, average precision in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k, (name, colour) in enumerate(zip(class_names, _colours(len(class_names)))):
        positives = y_true == k
        if positives.any():
            precision, recall, _ = precision_recall_curve(positives, probabilities[:, k])
            ap = average_precision_score(positives, probabilities[:, k])
            ax.step(recall, precision, where="post", color=colour, label=f"{name} (AP = {ap:.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall")
    ax.legend(loc="lower left")
    return save_figure(fig, path, bbox_inches="tight")


def plot_roc_curves(y_true: np.ndarray, probabilities: np.ndarray, class_names, path) -> Path:
    """One-vs-rest ROC curve per class, AUC in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k, (name, colour) in enumerate(zip(class_names, _colours(len(class_names)))):
        positives = y_true == k
        if positives.any() and not positives.all():
            fpr, tpr, _ = roc_curve(positives, probabilities[:, k])
            ax.plot(fpr, tpr, color=colour, label=f"{name} (AUC = {auc(fpr, tpr):.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02), title="ROC")
    ax.legend(loc="lower right")
    return save_figure(fig, path, bbox_inches="tight")


def plot_training_curves(histories: list[dict], path) -> Path:
    """Loss, accuracy and (where recorded) macro-F1 per epoch, train (solid) vs validation (dashed),
    one colour per fold; a dot marks the epoch whose weights were kept (lowest validation loss)."""
    keys = ["loss", "accuracy"] + (["val_f1_macro"] if all(h.get("val_f1_macro") for h in histories) else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.2))
    for fold, (history, colour) in enumerate(zip(histories, _colours(len(histories)))):
        epochs = np.arange(1, len(history["loss"]) + 1)
        best = int(np.nanargmin(history["val_loss"]))
        for ax, key in zip(axes, keys):
            validation = key if key.startswith("val_") else f"val_{key}"
            if key in history and key != validation:
                ax.plot(epochs, history[key], "-", color=colour, label=f"fold {fold} train")
            ax.plot(epochs, history[validation], "--", color=colour, label=f"fold {fold} val")
            ax.plot(best + 1, history[validation][best], "o", color=colour, markersize=5)
    axes[0].set_yscale("log")  # the first epochs' validation loss can be 10-100x the rest
    for ax, key in zip(axes, keys):
        ax.set(xlabel="epoch", ylabel=key, title="Validation macro-F1" if key == "val_f1_macro" else key.capitalize())
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=7, ncol=2)
    return save_figure(fig, path, bbox_inches="tight")


def plot_tsne(embeddings: np.ndarray, labels: np.ndarray, class_names, path, highlight: np.ndarray | None = None,
              seed: int = 0) -> Path:
    """2-D t-SNE of penultimate-layer embeddings coloured by true class; `highlight` (indices, e.g.
    the model's test crystals) drawn solid, the rest faint."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (len(embeddings) - 1) / 3)))
    # One thread: a few thousand points take seconds, while OpenMP threads spinning on a busy
    # machine cost ten times the CPU (measured: 23 s vs 1.4 s for 291 points on 2 shared cores).
    with threadpool_limits(1):
        xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            np.asarray(embeddings, np.float64))
    solid = np.zeros(len(xy), bool)
    solid[highlight if highlight is not None else slice(None)] = True
    fig, ax = plt.subplots(figsize=(6, 5))
    for k, (name, colour) in enumerate(zip(class_names, _colours(len(class_names)))):
        ax.scatter(*xy[(labels == k) & ~solid].T, s=6, color=colour, alpha=0.25)
        ax.scatter(*xy[(labels == k) & solid].T, s=12, color=colour, label=name)
    note = " (solid: test crystals)" if highlight is not None else ""
    ax.set(title=f"t-SNE of penultimate-layer embeddings{note}", xticks=[], yticks=[])
    ax.legend(markerscale=2)
    return save_figure(fig, path, bbox_inches="tight")


def _stage_layers(model) -> list:
    """The last convolution or activation layer at each spatial resolution: one per conv block
    (MicroCrystalNet's `block<k>_relu`) or per stage of a deep baseline, at most MAX_STAGES."""
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.ReLU, keras.layers.Activation)
    by_size: dict[tuple, object] = {}
    for layer in model.layers:
        if isinstance(layer, kinds) and len(layer.output.shape) == 4:
            by_size[tuple(layer.output.shape[1:3])] = layer
    stages = list(by_size.values())
    if len(stages) > MAX_STAGES:
        stages = [stages[i] for i in np.linspace(0, len(stages) - 1, MAX_STAGES).round().astype(int)]
    return stages


def stage_maps(model, x: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Names and outputs of each conv block / stage for inputs `x`.

    A baseline wraps its keras.applications backbone as one nested model; its stages are then taken
    inside the backbone, fed with what the wrapper hands it (grey -> RGB -> ImageNet scaling).
    """
    import keras

    stages = _stage_layers(model)
    if stages:
        outputs = keras.Model(model.inputs, [s.output for s in stages]).predict(x, verbose=0)
        return [s.name for s in stages], list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not nested:
        raise ValueError(f"{model.name}: no convolutional stages with 2-D feature maps to show")
    backbone = nested[-1]
    # The tensor fed to the backbone in the wrapper's graph (its own `.input` is its inner Input).
    to_backbone = keras.Model(model.inputs, backbone._inbound_nodes[0].input_tensors[0])
    return stage_maps(backbone, to_backbone.predict(x, verbose=0))


def plot_activation_maps(model, examples: np.ndarray, example_labels: np.ndarray, class_names, path) -> Path:
    """Channel-mean activation of each conv block's output for one crystal per class (paper Fig. 9)."""
    names, outputs = stage_maps(model, examples)
    fig, axes = plt.subplots(len(examples), len(names) + 1, figsize=(2 * (len(names) + 1), 2 * len(examples)),
                             squeeze=False)
    for row, label in enumerate(example_labels):
        axes[row, 0].imshow(examples[row, ..., 0], cmap="gray")
        axes[row, 0].set_ylabel(class_names[label])
        for col, (name, maps) in enumerate(zip(names, outputs), start=1):
            axes[row, col].imshow(np.asarray(maps[row]).mean(axis=-1), cmap="magma")
            if row == 0:
                axes[row, col].set_title(f"{name}\n{maps.shape[1]}x{maps.shape[2]}", fontsize=8)
    axes[0, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path, bbox_inches="tight")


def input_gradients(model, x: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """d p(class_index[i] | x[i]) / d x[i] for each image: the one backend-specific piece of the suite."""
    import keras

    x = np.asarray(x, np.float32)
    rows = np.arange(len(x))
    backend = keras.backend.backend()
    if backend == "torch":
        inputs = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
        model(inputs, training=False)[rows, class_index].sum().backward()
        return inputs.grad.detach().cpu().numpy()
    if backend == "tensorflow":
        import tensorflow as tf

        inputs = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            score = tf.reduce_sum(tf.gather_nd(model(inputs, training=False), np.stack([rows, class_index], 1)))
        return tape.gradient(score, inputs).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda z: model(z, training=False)[rows, class_index].sum())(x))
    raise ValueError(f"saliency maps support the torch, tensorflow and jax backends; got {backend}")


def plot_saliency_maps(model, examples: np.ndarray, example_labels: np.ndarray, class_names, path) -> Path:
    """Input-gradient saliency of the true class for one crystal per class (paper Fig. 9)."""
    saliency = np.abs(input_gradients(model, examples, np.asarray(example_labels))).max(axis=-1)
    fig, axes = plt.subplots(2, len(examples), figsize=(2.2 * len(examples), 4.6), squeeze=False)
    for col, label in enumerate(example_labels):
        axes[0, col].imshow(examples[col, ..., 0], cmap="gray")
        axes[0, col].set_title(class_names[label])
        axes[1, col].imshow(saliency[col], cmap="inferno")
    axes[0, 0].set_ylabel("crystal")
    axes[1, 0].set_ylabel("|d p(class) / d input|")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path, bbox_inches="tight")


def plot_scene_overlay(dataset, predicted: np.ndarray, image_id: str, path) -> Path:
    """The SEM scene with each scored crystal filled in its predicted class's colour and every
    misclassified crystal boxed (paper Fig. 8); `predicted` is -1 for unscored crystals."""
    from mcn.data.scenes import iter_scenes
    from mcn.errors import DataError

    scene = next((s for s in iter_scenes(dataset.root) if s.image_id == image_id), None)
    if scene is None:
        raise DataError(f"{dataset.root}: image {image_id!r} not found in images/")
    colours = np.array([c[:3] for c in _colours(dataset.num_classes)], np.float32)
    rgb = np.repeat(scene.image[..., None], 3, axis=2).astype(np.float32)
    members = np.flatnonzero((dataset.image_ids == image_id) & (predicted >= 0))
    for i in members:
        r0, c0, r1, c1 = dataset.bboxes[i]
        mask = dataset.crop_masks[i]
        region = rgb[r0:r1, c0:c1]
        region[mask] = 0.55 * region[mask] + 0.45 * colours[predicted[i]]
    height, width = scene.image.shape
    fig, ax = plt.subplots(figsize=(10, 10 * height / width))
    ax.imshow(rgb, interpolation="nearest")
    wrong = members[predicted[members] != dataset.labels[members]]
    for i in wrong:
        rows, cols = np.nonzero(dataset.crop_masks[i])
        corner = (dataset.bboxes[i, 1] + cols.min() - 0.5, dataset.bboxes[i, 0] + rows.min() - 0.5)
        size = (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
        ax.add_patch(Rectangle(corner, *size, fill=False, edgecolor="black", linewidth=2.2))
        ax.add_patch(Rectangle(corner, *size, fill=False, edgecolor="white", linewidth=1.1, linestyle="--"))
    handles = [Patch(color=c, label=f"predicted {n}") for n, c in zip(dataset.class_names, colours)]
    handles.append(Patch(fill=False, edgecolor="black", linestyle="--", label="misclassified"))
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.85)
    ax.set(title=f"{image_id}: predicted class of {len(members)} crystals, {len(wrong)} wrong (boxed)",
           xticks=[], yticks=[])
    return save_figure(fig, path, bbox_inches="tight")


def metrics_table(results) -> pd.DataFrame:
    """One row per fold (metrics and costs), then `mean` and `std` (sample std over folds)."""
    names = metric_names(results[0].class_names)
    rows = [{"fold": str(r.fold), **{k: r.metrics[k] for k in names}, "epochs_run": r.epochs_run,
             "seconds_per_epoch": r.seconds_per_epoch, "train_seconds": r.train_seconds,
             "inference_ms_per_crystal": 1e3 * r.inference_seconds_per_crystal, "n_params": r.n_params,
             "flops": r.flops} for r in results]
    table = pd.DataFrame(rows)
    numbers = table.drop(columns="fold")
    summary = pd.DataFrame([numbers.mean(), numbers.std(ddof=1)], index=["mean", "std"]).reset_index(names="fold")
    return pd.concat([table, summary], ignore_index=True)


def _json_rows(table: pd.DataFrame) -> dict:
    """{"folds": [...], "mean": {...}, "std": {...}} with NaN as null (strict JSON)."""
    rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            for row in table.to_dict("records")]
    return {"folds": rows[:-2], "mean": rows[-2], "std": rows[-1]}


def _examples(results, dataset) -> tuple[np.ndarray, np.ndarray]:
    """One crystal per class, from fold 0's test part where the class occurs there."""
    first = results[0]
    chosen = []
    for k in range(dataset.num_classes):
        pool = first.test_index[dataset.labels[first.test_index] == k]
        pool = pool if len(pool) else np.flatnonzero(dataset.labels == k)
        if len(pool):
            chosen.append(pool[0])
    chosen = np.asarray(chosen)
    return dataset.patches(first.input_size)[chosen], dataset.labels[chosen]


def write_figures(results, dataset, figures_dir: str | Path, progress: bool = True) -> list[Path]:
    """Every figure of a run; the scene overlay only for scene data sets (crops with bounding boxes).

    t-SNE and the saliency maps take seconds each, so a progress bar names the figure being drawn.
    """
    import keras

    import mcn.models  # noqa: F401  (registers the custom layers needed to load the models)

    figures_dir = Path(figures_dir)
    probabilities = out_of_fold(results, len(dataset))
    scored = np.flatnonzero(~np.isnan(probabilities[:, 0]))
    y, p, names = dataset.labels[scored], probabilities[scored], dataset.class_names
    model = keras.saving.load_model(results[0].model_path, safe_mode=True)
    examples, example_labels = _examples(results, dataset)
    steps = {
        "confusion_matrix": lambda path: plot_confusion(y, p, names, path),
        "precision_recall": lambda path: plot_pr_curves(y, p, names, path),
        "roc": lambda path: plot_roc_curves(y, p, names, path),
        "training_curves": lambda path: plot_training_curves([r.history for r in results], path),
        "tsne": lambda path: plot_tsne(results[0].embeddings, dataset.labels, names, path,
                                       highlight=results[0].test_index),
        "activation_maps": lambda path: plot_activation_maps(model, examples, example_labels, names, path),
        "saliency_maps": lambda path: plot_saliency_maps(model, examples, example_labels, names, path),
    }
    if dataset.root and (dataset.bboxes[scored] >= 0).all():
        predicted = np.full(len(dataset), -1)
        predicted[scored] = p.argmax(axis=1)
        busiest = pd.Series(dataset.image_ids[scored]).value_counts().index[0]
        steps["scene_overlay"] = lambda path: plot_scene_overlay(dataset, predicted, busiest, path)
    bar = tqdm(steps.items(), desc="figures", unit="figure", disable=not progress, leave=False)
    written = []
    for name, draw in bar:
        bar.set_postfix_str(name)
        written.append(draw(figures_dir / f"{name}.png"))
    return written


def write_report(results, dataset, out_dir: str | Path, figures: bool = True,
                 progress: bool = True) -> pd.DataFrame:
    """metrics.csv / metrics.json (per fold, mean, std), printed mean +- std, and every figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = metrics_table(results)
    write_text(out_dir / "metrics.csv", table.to_csv(index=False))
    first = results[0]
    record = {"model": first.model_name, "backend": first.backend, "input_size": first.input_size,
              "class_names": list(first.class_names), "data_fingerprint": first.data_fingerprint,
              "config": first.config, "hparams": first.hparams,
              **_json_rows(table)}
    write_text(out_dir / "metrics.json", json.dumps(record, indent=1))
    print(format_summary(table))
    if figures:
        for path in write_figures(results, dataset, out_dir / "figures", progress):
            print(f"wrote {path}")
    return table


def format_summary(table: pd.DataFrame) -> str:
    """Per-fold rows and a mean +- std row of the summary metrics, as aligned text."""
    folds = table[~table["fold"].isin(["mean", "std"])]
    mean, std = (table[table["fold"] == k].iloc[0] for k in ("mean", "std"))
    columns = [*SUMMARY_METRICS, "seconds_per_epoch"]
    lines = ["fold   " + "  ".join(f"{c:>17}" for c in columns)]
    lines += [f"{row['fold']:<6} " + "  ".join(f"{row[c]:>17.3f}" for c in columns) for _, row in folds.iterrows()]
    lines.append("mean   " + "  ".join(f"{f'{mean[c]:.3f} +- {std[c]:.3f}':>17}" for c in columns))
    return "\n".join(lines)
