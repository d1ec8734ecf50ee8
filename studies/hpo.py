"""`python -m studies.hpo`: Optuna hyper-parameter search for MicroCrystalNet or a classical model.

Objective: mean macro-F1 over search splits inside the training parts of grouped CV folds made once
per study (never on a test fold `benchmarks.run` reports; see `studies.objectives`), reported fold
by fold so a MedianPruner stops bad trials early. `--nested` runs nested cross-validation instead
(`studies.nested`): an honest estimate of the tuned model. The study lives in an Optuna RDB
storage (SQLite by default), so rerunning the same command resumes it, trial numbers continuing;
`--trials` is the study's total budget of completed and pruned trials across every worker, `--timeout`
a per-invocation limit. Each trial is an MLflow run nested under the study's run. Files land in --out/<study name>/:
best_params.json, trials.csv, optimization_history.png, param_importances.png.
"""

from __future__ import annotations

import sys
from collections import Counter

import optuna

from mcn.errors import DataError, exit_interrupted
from mcn.experiment.tracking import StoreError
from studies import cli, nested, objectives, spaces
from studies.study import TrialBudget, claim, finished_trials, open_study, spent_trials, write_study_outputs

DEFAULT_TRIALS = 20


def build_parser():
    p = cli.parser("python -m studies.hpo",
                   "Optuna hyper-parameter search (mean macro-F1 over grouped CV folds, pruned fold by fold, "
                   "resumable, tracked in MLflow).")
    p.add_argument("--model", default="microcrystalnet",
                   help=f"microcrystalnet or a classifier: {', '.join(spaces.CLASSIFIERS)} (default: %(default)s)")
    p.add_argument("--feature-set", help="classical models: handcrafted (default), embedding or hybrid")
    p.add_argument("--params", help="comma list of parameters to search (default: the model's whole space: for "
                                    f"microcrystalnet {', '.join(spaces.MICROCRYSTALNET)}); the others keep "
                                    "the profile's defaults")
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help="total trials of the study, completed or pruned (default: %(default)s); a rerun "
                        "runs only the missing ones; with --nested, per outer fold")
    p.add_argument("--nested", action="store_true",
                   help="nested CV: tune on inner folds of each outer training part, score the winner once on "
                        "the outer test fold (handcrafted features or microcrystalnet)")
    p.add_argument("--inner-folds", type=int, default=nested.DEFAULT_INNER_FOLDS,
                   help="inner grouped folds per outer fold with --nested (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        space, feature_set = _space(args)
        data = cli.load(args)
        name = args.study_name or _study_name(args, data, feature_set)
        if args.nested:
            if args.inner_folds < 2:
                raise ValueError(f"--inner-folds must be >= 2; got {args.inner_folds}")
            nested.run_nested(args, data, args.model, feature_set, space, name, cli.study_tags(args, data, "nested"))
            return
        study = open_study(name, args.storage, args.seed, heartbeat=args.heartbeat)
        claim(study, {**data.config(), "model": args.model, "feature_set": feature_set,
                      "objective": objectives.OBJECTIVE, "scored_on": "search splits (validation parts)"})
        if feature_set:
            data.features(feature_set)  # embeddings trained (or loaded) once, before the first trial
    except (DataError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        exit_interrupted("before the first trial; the embedding CNN's finished folds are kept; "
                         "rerun the same command to resume")
    todo = max(args.trials - spent_trials(study), 0)
    out = args.out / name
    print(f"study {name!r} in {args.storage}: {len(study.trials)} trial(s) stored, {todo} to run "
          f"(budget {args.trials}); searching {', '.join(space)}; files in {out}")
    tags = cli.study_tags(args, data, "hpo")
    budget = TrialBudget(study, args.storage, args.trials)
    objective = objectives.search_objective(args.model, feature_set, space, data,
                                            data.search_folds(carve=feature_set is None), tags, budget.started)
    params = {**data.config(), "model": args.model, "feature_set": feature_set or "image",
              "space": {k: repr(v) for k, v in space.items()}}
    try:
        ran = cli.run_trials(study, args, data, objective, todo if budget.admit() else 0, tags, params,
                             lambda: write_study_outputs(study, out), callbacks=(budget,))
    except StoreError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        budget.started()
        exit_interrupted(f"{spent_trials(study)} trial(s) of study {name!r} finished and stored in {args.storage} "
                         f"(files in {out}); rerun the same command to resume")
    finally:
        budget.started()  # no further trial: let the other workers count
    _summary(study, out, args.storage)
    cli.check_outcome(ran)
    if not finished_trials(study):
        sys.exit(f"error: study {name!r} has no completed trial")


def _space(args) -> tuple[dict, str | None]:
    """The narrowed search space and the feature set (None for MicroCrystalNet)."""
    from features.embeddings import FEATURE_SETS

    space = spaces.space_for(args.model)
    if args.model == objectives.CNN:
        if args.feature_set:
            raise ValueError("--feature-set applies to classical models only, not to microcrystalnet")
        feature_set = None
    else:
        feature_set = args.feature_set or "handcrafted"
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {feature_set!r}; choose from {', '.join(FEATURE_SETS)}")
    names = None if args.params is None else [p.strip() for p in args.params.split(",") if p.strip()]
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1; got {args.trials}")
    return spaces.narrow(space, names), feature_set


def _study_name(args, data, feature_set: str | None) -> str:
    model = f"{args.model}-{feature_set}" if feature_set else args.model
    return f"hpo-{model}-{data.dataset.name}-{args.profile}-{len(data.folds)}fold-seed{args.seed}"


def _summary(study: optuna.Study, out, storage: str) -> None:
    done = finished_trials(study)
    states = Counter(t.state.name.lower() for t in study.trials)
    print(f"done: {len(study.trials)} trial(s) stored ({', '.join(f'{n} {s}' for s, n in states.items())})")
    if done:
        best = study.best_trial
        print(f"best: trial {best.number}, mean f1_macro {best.value:.3f} "
              f"± {best.user_attrs.get('f1_macro_std', float('nan')):.3f} over the folds, params {best.params}")
        print("note: this CV score selected the parameters, so it is optimistic as a final estimate")
    else:
        print("no trial completed; see the errors above")
    print(f"files: {out}; dashboard: optuna-dashboard {storage}")


if __name__ == "__main__":
    main()
