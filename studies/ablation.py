"""`python -m studies.ablation`: the paper's ablations (sections 4.3, 5.2) as resumable grid studies.

Each ablation is an Optuna study whose one parameter, `variant`, runs over a fixed list; every
variant is scored on the same grouped folds as the others (mean and std of macro-F1 and top-1 over
the folds). Variants change the profile's MicroCrystalNet setting one thing at a time: the NSR block
(z-score, PCA, L1 each off, all off; PCA dimension), conv kernel sizes and depth, input resolution,
batch size, dropout and optimizer; `recipe` adds the fast-training levers (one-cycle schedule, label
smoothing, test-time flips, larger batches, fewer epochs, larger input) one at a time, then
together. `hybrid` asks whether CNN embeddings help the classical models: each classifier of the
profile on handcrafted, embedding and hybrid features.

Resume: a variant counts as done once a trial of it completed. Each invocation queues the missing
variants in table order (`enqueue_trial`), so a variant interrupted by Ctrl-C (Optuna marks it FAIL)
is run again. The study's sampler is a `GridSampler` over the variants; it only chooses when the
queue is empty (another worker took the queued trials). The queue is needed because the
GridSampler's own bookkeeping counts failed and interrupted trials as visited and would skip them.
Files in --out/<study name>/: ablation.csv, ablation.md (printed), ablation.png, trials.csv.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from mcn.experiment.report import mean_std_columns, to_markdown  # noqa: E402
from mcn.experiment.stats import summarize  # noqa: E402
from mcn.experiment.stats import versus_best  # noqa: E402
from mcn.errors import DataError, exit_interrupted  # noqa: E402
from studies import cli, objectives, runs, spaces  # noqa: E402
from mcn.files import save_figure, write_text  # noqa: E402
from studies.study import claim, open_study  # noqa: E402

CNN_ABLATIONS: dict[str, dict[str, dict]] = {
    "nsr": {"full": {}, "no_zscore": {"zscore": False}, "no_pca": {"pca": False}, "no_l1": {"l1": False},
            "no_nsr": {"zscore": False, "pca": False, "l1": False},
            "pca_32": {"pca_dim": 32}, "pca_64": {"pca_dim": 64}, "pca_256": {"pca_dim": 256}},
    "kernels": {"k7533": {"kernel_sizes": "7,5,3,3"}, "k3333": {"kernel_sizes": "3,3,3,3"},
                "k5555": {"kernel_sizes": "5,5,5,5"}, "k7777": {"kernel_sizes": "7,7,7,7"},
                "k3577": {"kernel_sizes": "3,5,7,7"},
                "depth_2": {"depth": 2}, "depth_3": {"depth": 3}, "depth_5": {"depth": 5}},
    "resolution": {f"{s}px": {"input_size": s} for s in (16, 32, 64, 128)},
    "batch_size": {f"batch_{b}": {"batch_size": b} for b in (16, 32, 64, 128, 256)},
    "dropout": {f"dropout_{d}": {"fc_dropout": d} for d in (0.2, 0.5, 0.7)},
    "optimizer": {o: {"optimizer": o} for o in ("adam", "sgd", "rmsprop")},
    # the fast-training levers (issue 15), one at a time on top of the profile's recipe, then together
    "recipe": {"profile": {}, "epochs_8": {"epochs": 8},
               "onecycle": {"schedule": "onecycle", "learning_rate": 3e-3},
               "48px": {"input_size": 48}, "test_flips": {"test_flips": True},
               "label_smoothing": {"label_smoothing": 0.1},
               "batch_64": {"batch_size": 64, "learning_rate": 2e-3},
               "all_levers": {"schedule": "onecycle", "learning_rate": 3e-3, "label_smoothing": 0.1,
                              "test_flips": True}},
}
"""Variant name -> MicroCrystalNet overrides (TrainConfig or create_model names, see `spaces`)."""

ABLATIONS = (*CNN_ABLATIONS, "hybrid")
METRICS = ("f1_macro", "top1")
ALPHA = 0.05
"""Significance level of the Holm-adjusted p-values (a star in the table)."""


def variants(ablation: str, classifiers: tuple[str, ...]) -> dict[str, dict]:
    """The variants of one ablation; `hybrid` pairs each classifier with each feature set."""
    if ablation == "hybrid":
        from features.embeddings import FEATURE_SETS

        return {f"{c}:{f}": {} for c in classifiers for f in FEATURE_SETS}
    if ablation not in CNN_ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}, all")
    return CNN_ABLATIONS[ablation]


def build_parser():
    p = cli.parser("python -m studies.ablation",
                   "The paper's ablations as grid studies on the same grouped folds: a table (mean ± std "
                   "macro-F1 and top-1 over folds per variant) and a bar chart each; resumable, tracked in MLflow.")
    p.add_argument("--ablation", default="nsr", help=f"{', '.join(ABLATIONS)} or all (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        names = list(ABLATIONS) if args.ablation == "all" else [args.ablation]
        for name in names:
            variants(name, ())  # unknown names fail before any data is loaded
        if args.study_name and len(names) > 1:
            raise ValueError("--study-name names one study; run --ablation all without it")
        data = cli.load(args)
        grids = {name: variants(name, data.profile.classifiers) for name in names}
        if "hybrid" in grids:
            data.features("hybrid")  # handcrafted features and fold embeddings, once, before any trial
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        exit_interrupted("before the first variant; the embedding CNN's finished folds are kept; "
                         "rerun the same command to resume")
    for name, grid in grids.items():
        try:
            table = run_ablation(name, grid, args, data)
        except KeyboardInterrupt:
            exit_interrupted(f"during the {name} ablation; finished variants are stored in {args.storage}; "
                             "rerun the same command to resume")
        except ValueError as exc:
            sys.exit(f"error: {exc}")
        print(f"\n{name} ablation ({data.dataset.name}, profile {data.profile.name}, {len(data.folds)} folds):")
        print(markdown(table))
    print(f"\nfiles: {args.out}; dashboard: optuna-dashboard {args.storage}")


def run_ablation(name: str, grid: dict[str, dict], args, data: objectives.StudyData) -> pd.DataFrame:
    """Run the missing variants of one ablation study; its table (also written as CSV, MD, PNG)."""
    study_name = args.study_name or (f"ablation-{name}-{data.dataset.name}-{args.profile}-{len(data.folds)}fold-"
                                     f"seed{args.seed}")
    study = open_study(study_name, args.storage, args.seed,
                       sampler=optuna.samplers.GridSampler({"variant": list(grid)}, seed=args.seed),
                       pruner=optuna.pruners.NopPruner(), heartbeat=args.heartbeat)
    claim(study, {**data.config(), "ablation": name})
    todo = _queue_missing(study, grid)
    out = args.out / study_name
    print(f"study {study_name!r}: {len(grid)} variants, {len(todo)} to run ({', '.join(todo) or 'none'})")
    tags = cli.study_tags(args, data, f"ablation:{name}")
    params = {**data.config(), "ablation": name, "variants": ",".join(grid)}

    def write_outputs():
        title = f"{name} ablation: {data.dataset.name}, profile {data.profile.name}, {len(data.folds)} folds"
        paths = write_table(table_of(study, grid, data.test_train_ratio()), out, title)
        write_text(out / "trials.csv", study.trials_dataframe().to_csv(index=False))
        return [*paths, out / "trials.csv"]

    ran = cli.run_trials(study, args, data, _objective(name, grid, data, tags), len(todo), tags, params,
                         write_outputs)
    cli.check_outcome(ran)
    return table_of(study, grid, data.test_train_ratio())


def _queue_missing(study: optuna.Study, grid: dict[str, dict]) -> list[str]:
    """Queue, in table order, every variant without a completed trial (and not queued already)."""
    states = optuna.trial.TrialState
    done = {t.params.get("variant") for t in study.trials if t.state == states.COMPLETE}
    queued = {t.system_attrs.get("fixed_params", {}).get("variant") for t in study.trials
              if t.state == states.WAITING}
    todo = [v for v in grid if v not in done]
    for variant in todo:
        if variant not in queued:
            study.enqueue_trial({"variant": variant})
    return todo


def _objective(name: str, grid: dict[str, dict], data: objectives.StudyData, tags: dict):
    def objective(trial: optuna.Trial) -> float:
        variant = trial.suggest_categorical("variant", list(grid))
        with runs.trial_run(trial, {**tags, "variant": variant}, {"variant": variant, **grid[variant]}):
            if name == "hybrid":
                classifier, feature_set = variant.split(":")
                folds = objectives.score_classifier(trial, data, classifier, feature_set, {}, data.folds,
                                                     prune=False)
            else:
                train, hparams = spaces.split_params(grid[variant])
                folds = objectives.score_cnn(trial, data, train, hparams, data.folds, prune=False)
            return objectives.finish(trial, folds)

    return objective


def table_of(study: optuna.Study, grid: dict[str, dict], test_train_ratio: float) -> pd.DataFrame:
    """One row per variant, in grid order: mean and std over folds, folds, seconds, or the error;
    and the corrected resampled t-test of each variant's fold F1 against the best variant's."""
    rows, scores = [], {}
    for variant, overrides in grid.items():
        trials = [t for t in study.trials if t.params.get("variant") == variant]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        row = {"variant": variant, "settings": ", ".join(f"{k}={v}" for k, v in overrides.items()) or "profile defaults"}
        if complete:
            trial = complete[-1]
            folds = trial.user_attrs["fold_metrics"]
            summary = summarize(folds)
            row.update({k: summary[k] for m in METRICS for k in (m, f"{m}_std")})
            row.update({"folds": len(folds), "seconds": trial.duration.total_seconds(), "error": ""})
            scores[variant] = np.array([f[METRICS[0]] for f in folds])
        else:
            failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
            row.update({k: np.nan for m in METRICS for k in (m, f"{m}_std")})
            row.update({"folds": 0, "seconds": np.nan,
                        "error": failed[-1].user_attrs.get("error", "failed") if failed else "not run"})
        rows.append(row)
    table = pd.DataFrame(rows)
    raw, adjusted = {}, {}
    if scores:
        _, raw, adjusted = versus_best(scores, test_train_ratio)
    table["p_vs_best"] = table["variant"].map(raw).astype(float)
    table["p_holm"] = table["variant"].map(adjusted).astype(float)
    return table


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown: each metric as mean ± std over folds."""
    shown = pd.DataFrame({"variant": table["variant"], "settings": table["settings"]})
    shown = shown.join(mean_std_columns(table, list(METRICS), labels={m: f"{m} (mean ± std)" for m in METRICS}))
    best = table.loc[table[METRICS[0]].idxmax(), "variant"] if table[METRICS[0]].notna().any() else None
    shown[f"p vs best ({METRICS[0]})"] = [
        "best" if v == best else "-" if not np.isfinite(p) else f"{p:.3f}{'*' if h < ALPHA else ''}"
        for v, p, h in zip(table["variant"], table["p_vs_best"], table["p_holm"])]
    shown["folds"] = table["folds"]
    shown["s"] = [f"{s:.0f}" if np.isfinite(s) else "-" for s in table["seconds"]]
    if (table["error"] != "").any():
        shown["error"] = table["error"]
    return to_markdown(shown)


def write_table(table: pd.DataFrame, out, title: str) -> list:
    """ablation.csv, ablation.md and ablation.png (bars: mean, error bars: std over folds)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "ablation.csv", out / "ablation.md", out / "ablation.png"]
    write_text(paths[0], table.to_csv(index=False))
    write_text(paths[1], markdown(table) + "\n")
    fig, ax = plt.subplots()
    x = np.arange(len(table))
    for i, (m, colour) in enumerate(zip(METRICS, ("tab:blue", "tab:orange"))):
        ax.bar(x + (i - 0.5) * 0.4, table[m].fillna(0), 0.4, yerr=table[f"{m}_std"].fillna(0), capsize=3,
               color=colour, label=f"{m} (mean ± std over folds)")
    ax.set_xticks(x, table["variant"], rotation=30, ha="right")
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.set_size_inches(max(6.0, 0.9 * len(table) + 2), 4.5)
    fig.tight_layout()
    save_figure(fig, paths[2])
    return paths


if __name__ == "__main__":
    main()
