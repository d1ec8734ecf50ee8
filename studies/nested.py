"""`python -m studies.hpo ... --nested`: nested cross-validation of a hyper-parameter search.

For each outer fold (the folds `benchmarks.run` reports), an Optuna study tunes the model on inner
grouped folds of that fold's training part only; the best parameters are refitted on the whole
training part and scored ONCE on the outer test fold, which no search saw. The model with its
default parameters is scored on the same outer folds, so tuned and default are compared on paired
folds (corrected resampled t-test and Bayesian correlated t-test). The reported mean ± std is over
outer folds; the per-fold best parameters are kept (scikit-learn's nested cross-validation example,
with grouped folds). MLflow: one parent run, one child run per outer fold, its trials nested in it.

Files in --out/<study name>/: nested.md (printed), nested.csv (per outer fold: best parameters,
inner score, outer scores tuned and default), nested.json.
"""

from __future__ import annotations

import json

import optuna
import pandas as pd

from mcn.experiment import stats, tracking
from mcn.experiment.report import SPREAD, mean_std, to_markdown
from mcn.files import write_text
from studies import objectives, spaces
from studies.study import claim, open_study, spent_trials

DEFAULT_INNER_FOLDS = 3
METRICS = ("f1_macro", "top1")


def run_nested(args, data: objectives.StudyData, model: str, feature_set: str | None, space: dict,
               base_name: str, tags: dict) -> pd.DataFrame:
    """Tune inside every outer fold, score the winners on the outer test folds; the per-fold table."""
    from mcn.data.splits import folds_hash, inner_folds

    if feature_set in ("embedding", "hybrid"):
        raise ValueError(f"--nested runs on handcrafted features or microcrystalnet: the {feature_set!r} features "
                         "come from each outer fold's CNN, which trained on the inner test folds")
    out = args.out / f"{base_name}-nested"
    uri = tracking.configure(args.tracking_uri)
    experiment = tracking.experiment_id(f"{data.dataset.name} studies", uri)
    rows = []
    with tracking.start_run(f"nested {base_name}", experiment=experiment, tags={**tags, "nested": "true"},
                            params={**data.config(), "model": model, "feature_set": feature_set or "image",
                                    "inner_folds": args.inner_folds, "trials_per_outer_fold": args.trials}):
        for outer in data.folds:
            inner = inner_folds(data.dataset, outer, args.inner_folds, data.seed + 1 + outer.index, data.group_by)
            name = f"{base_name}-nested-outer{outer.index}"
            study = open_study(name, args.storage, data.seed + outer.index, heartbeat=args.heartbeat)
            claim(study, {**data.config(), "model": model, "feature_set": feature_set, "outer_fold": outer.index,
                          "inner_split": folds_hash(inner), "objective": objectives.OBJECTIVE})
            todo = max(args.trials - spent_trials(study), 0)
            print(f"outer fold {outer.index}: study {name!r}, {len(inner)} inner folds, {todo} trial(s) to run")
            with tracking.start_run(f"outer fold {outer.index}", nested=True,
                                    tags={**tags, "outer_fold": str(outer.index)}):
                objective = objectives.search_objective(model, feature_set, space, data, inner, tags)
                if todo:
                    study.optimize(objective, n_trials=todo, timeout=args.timeout, show_progress_bar=not args.quiet,
                                   catch=(ValueError,), callbacks=[_print_trial])
                complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
                if not complete:
                    raise ValueError(f"outer fold {outer.index}: no trial completed; see the errors above")
                best = study.best_trial
                tuned = _outer_score(model, feature_set, data, outer, best.params)
                default = _outer_score(model, feature_set, data, outer, {})
                tracking.log_metrics({**{f"outer_{k}": tuned[k] for k in METRICS},
                                      **{f"default_{k}": default[k] for k in METRICS},
                                      f"inner_best_{objectives.OBJECTIVE}": best.value})
                import mlflow

                mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
            rows.append({"outer_fold": outer.index, "n_test": len(outer.test),
                         "n_train": len(data.dataset) - len(outer.test), "trials": len(complete),
                         "inner_best": best.value, "best_params": json.dumps(best.params),
                         **{f"tuned_{k}": tuned[k] for k in METRICS}, **{f"default_{k}": default[k] for k in METRICS}})
            print(f"outer fold {outer.index}: inner best {objectives.OBJECTIVE} {best.value:.3f}; outer test "
                  f"tuned {tuned['f1_macro']:.3f}, default {default['f1_macro']:.3f}; params {best.params}")
        table = pd.DataFrame(rows)
        text = report(table, model, feature_set, data, args)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "nested.csv", table.to_csv(index=False))
        write_text(out / "nested.md", text)
        write_text(out / "nested.json", json.dumps({"model": model, "feature_set": feature_set,
                                                    "config": data.config(), "folds": rows}, indent=1))
        tracking.log_artifacts([out / "nested.csv", out / "nested.md", out / "nested.json"], "nested")
    print(text)
    print(f"files: {out}")
    return table


def _outer_score(model: str, feature_set: str | None, data, outer, params: dict) -> dict:
    """Refit on the outer training part with `params`, score once on the outer test fold."""
    if feature_set is None:
        from mcn.train import train_fold

        train, hparams = spaces.split_params(params)
        return train_fold(objectives.CNN, data.dataset, outer, data.train_config(train),
                          data.model_hparams(hparams)).metrics
    from features.crossval import cross_validate_classifier

    return cross_validate_classifier(model, data.features(feature_set), data.dataset.labels, [outer],
                                     data.dataset.class_names, data.seed, **params)[0]["metrics"]


def _print_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    from studies.cli import print_trial

    print_trial(study, trial)


def report(table: pd.DataFrame, model: str, feature_set: str | None, data, args) -> str:
    """Tuned vs default over the outer folds, with the paired tests, and the per-fold parameters."""
    from mcn.data.splits import describe_grouping

    ratio = float((table["n_test"] / table["n_train"]).mean())
    lines = []
    for metric in METRICS:
        tuned, default = table[f"tuned_{metric}"].to_numpy(), table[f"default_{metric}"].to_numpy()
        _, p = stats.corrected_resampled_ttest(tuned, default, ratio)
        worse, equal, better = stats.bayesian_correlated_ttest(tuned, default, ratio / (1 + ratio))
        lines.append({"metric": metric, "default": mean_std(default.mean(), default.std(ddof=1)),
                      "tuned (nested)": mean_std(tuned.mean(), tuned.std(ddof=1)),
                      "tuned - default": f"{tuned.mean() - default.mean():+.3f}", "p (corrected)": f"{p:.3f}",
                      "P(tuned better / equiv. / worse)": f"{better:.2f} / {equal:.2f} / {worse:.2f}"})
    per_fold = table[["outer_fold", "trials", "inner_best", "tuned_f1_macro", "default_f1_macro", "best_params"]]
    per_fold = per_fold.assign(inner_best=per_fold["inner_best"].round(3),
                               tuned_f1_macro=per_fold["tuned_f1_macro"].round(3),
                               default_f1_macro=per_fold["default_f1_macro"].round(3))
    name = f"{model}:{feature_set}" if feature_set else model
    caption = (f"Nested CV of {name} on {data.dataset.name}: {len(table)} outer folds "
               f"{describe_grouping(data.group_by)}, {args.inner_folds} inner folds per outer training part, "
               f"{args.trials} trials per outer fold (TPE, seed {data.seed}), profile {data.profile.name}. "
               f"{SPREAD.replace('folds of all repeats', 'outer folds')}; default and tuned scored on the same outer "
               "test folds, which no search saw; p: Nadeau-Bengio corrected resampled t-test; P: Bayesian "
               "correlated t-test, ROPE ±0.01.")
    return (f"{to_markdown(pd.DataFrame(lines))}\n\n{caption}\n\nPer outer fold (trials: completed, the pruned ones "
            f"left out; inner_best: the winning trial's mean {objectives.OBJECTIVE} over the inner folds, optimistic "
            f"by selection):\n\n{to_markdown(per_fold)}\n")
