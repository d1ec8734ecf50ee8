"""What `python -m studies.hpo` and `python -m studies.ablation` share on the command line.

The common options (data, folds, seed, profile, storage, tracking, backend), loading the data once,
and running a study's trials inside its MLflow parent run, writing the study's files even when the
run is interrupted (Ctrl-C marks the running trial FAIL; rerunning the command resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import optuna
from tqdm.auto import tqdm

import mcn
from mcn import checks, cli
from mcn.experiment import tracking
from mcn.data.splits import describe_grouping
from mcn.experiment.profiles import get_profile
from studies import runs
from studies.objectives import OBJECTIVE, StudyData
from studies.study import DEFAULT_STORAGE, HEARTBEAT_SECONDS, SPENT_STATES

DEFAULT_ROOT = Path("mlruns") / "studies"


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser holding the options every study command takes."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    cli.profile(p, "quick")
    cli.data(p)
    cli.folds(p)
    cli.seed(p)
    cli.group_by(p)
    cli.size_features(p)
    cli.hparam(p)
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="Optuna storage URL, any RDB URL (default: %(default)s)")
    p.add_argument("--study-name", help="Optuna study name (default: derived from the settings)")
    cli.out(p, type=Path, default=DEFAULT_ROOT,
            default_text=f"{DEFAULT_ROOT}: one subfolder per study, and the cached CNN embeddings")
    cli.tracking_uri(p)
    cli.backend(p)
    p.add_argument("--heartbeat", type=int, default=HEARTBEAT_SECONDS,
                   help="seconds between a worker's signs of life; a trial silent for 3 of them is taken as "
                        "dead, marked failed and run again (default: %(default)s)")
    cli.jobs(p)
    cli.quiet(p)
    return p


def load(args: argparse.Namespace) -> StudyData:
    """Select the Keras backend, then load the data and make the folds once for every trial."""
    from mcn.train import parse_hparams

    mcn.select_backend(args.backend)  # before anything imports keras
    checks.seed(args.seed)
    checks.jobs(args.jobs)
    checks.at_least("--heartbeat", args.heartbeat, 1)
    checks.writable_folder(args.out)
    checks.outside_data(args.out, args.data)
    tracking.check_store(args.tracking_uri)
    if args.folds < 2:
        raise ValueError(f"--folds must be >= 2 for cross-validation; got {args.folds}")
    if args.timeout is not None and args.timeout <= 0:
        raise ValueError(f"--timeout must be > 0 seconds; got {args.timeout}")
    profile = get_profile(args.profile)
    data = StudyData.load(args.data, args.folds, args.seed, profile, args.out, parse_hparams(args.hparam),
                          args.group_by, args.size_features, args.jobs)
    ds = data.dataset
    print(f"data: {ds.name} ({len(ds)} crystals {ds.class_counts()}, fingerprint {data.fingerprint}); "
          f"{len(data.folds)} folds {describe_grouping(data.group_by)} ({data.group_reason}), seed {args.seed}; "
          f"size features {data.size_features}; profile {profile.name}: {profile.description}")
    return data


def study_tags(args: argparse.Namespace, data: StudyData, kind: str) -> dict[str, str]:
    """Reproducibility tags of the study's runs (data, seed, code and package versions)."""
    return tracking.run_tags(backend=args.backend, seed=args.seed, data_fingerprint=data.fingerprint,
                             family="study", study_kind=kind, profile=data.profile.name,
                             data_name=data.dataset.name, folds=len(data.folds), group_by=data.group_by)


def run_trials(study: optuna.Study, args: argparse.Namespace, data: StudyData, objective: Callable,
               n_trials: int, tags: dict[str, str], params: dict,
               write_outputs: Callable[[], list[Path]], callbacks: tuple = ()) -> list[optuna.trial.FrozenTrial]:
    """Run up to `n_trials` trials inside the study's MLflow parent run; the trials this call ran.

    The files are written in any case. Failed trials (a ValueError such as a PCA dimension larger
    than the features, or an MLflow store that is busy) are recorded and the study goes on; they
    rerun on resume. KeyboardInterrupt propagates after the files are written.
    """
    from mlflow.exceptions import MlflowException

    uri = tracking.configure(args.tracking_uri)
    experiment = tracking.experiment_id(f"{data.dataset.name} studies", uri)
    ran: list[optuna.trial.FrozenTrial] = []
    with runs.study_run(study, args.storage, experiment, tags, params):
        try:
            if n_trials > 0:
                study.optimize(objective, n_trials=n_trials, timeout=args.timeout, catch=(ValueError, MlflowException),
                               callbacks=[print_trial, lambda _, trial: ran.append(trial), *callbacks],
                               show_progress_bar=not args.quiet)
        finally:
            paths = write_outputs()
            tracking.log_artifacts(paths, "study")
            complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if complete:
                tracking.log_metrics({f"best_{OBJECTIVE}": max(t.value for t in complete),
                                      "trials_complete": len(complete)})
    return ran


def check_outcome(ran: list[optuna.trial.FrozenTrial]) -> None:
    """Exit non-zero when this invocation ran trials and every one of them failed."""
    if ran and not any(t.state in SPENT_STATES for t in ran):
        errors = {t.user_attrs.get("error", "see the log above") for t in ran}
        sys.exit(f"error: all {len(ran)} trial(s) failed: {'; '.join(sorted(errors))[:2000]}")


def print_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial: state, score (or why it stopped), parameters."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        outcome = f"{OBJECTIVE} {trial.value:.3f} ± {trial.user_attrs.get(f'{OBJECTIVE}_std', float('nan')):.3f}"
    elif trial.state == optuna.trial.TrialState.PRUNED:
        steps = trial.intermediate_values
        outcome = f"pruned after {len(steps)} fold(s) at {OBJECTIVE} {list(steps.values())[-1]:.3f}" if steps \
            else "pruned"
    else:
        outcome = f"failed: {trial.user_attrs.get('error', 'see the log above')}"
    tqdm.write(f"trial {trial.number}: {outcome}  {trial.params}")
