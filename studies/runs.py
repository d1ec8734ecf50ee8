"""MLflow runs of a study: one parent run per study, one nested run per trial.

Logging goes through `benchmarks.tracking` (the suite's one MLflow helper: store, experiment, tags,
metric names). The parent run is tagged with a key derived from the study's storage and name, so a
resumed study finds and reopens its own parent run and its new trials land beside the old ones.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator, Mapping

import optuna

from mcn.experiment import tracking

STUDY_KEY_TAG = "optuna_study_key"


def study_key(study: optuna.Study, storage: str) -> str:
    """Identity of a study across invocations: its storage URL and name."""
    return hashlib.sha256(f"{storage}|{study.study_name}".encode()).hexdigest()[:16]


def _find_parent(experiment: str, key: str) -> str | None:
    import mlflow

    found = mlflow.search_runs([experiment], filter_string=f"tags.{STUDY_KEY_TAG} = '{key}'",
                               max_results=1, output_format="list")
    return found[0].info.run_id if found else None


@contextmanager
def study_run(study: optuna.Study, storage: str, experiment: str, tags: Mapping[str, str],
              params: Mapping[str, object]) -> Iterator:
    """The study's parent run: reopened when it exists, else created with `tags` and `params`.

    Parameters are logged once, at creation (MLflow refuses to change them); an interrupted study
    ends its run as KILLED, a finished invocation as FINISHED.
    """
    import mlflow

    key = study_key(study, storage)
    run_id = _find_parent(experiment, key)
    if run_id is None:
        run = mlflow.start_run(run_name=study.study_name, experiment_id=experiment,
                               tags={**tags, STUDY_KEY_TAG: key, "optuna_study": study.study_name})
        mlflow.log_params(tracking.flatten_params(params))
    else:
        run = mlflow.start_run(run_id=run_id)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status)


@contextmanager
def trial_run(trial: optuna.Trial, tags: Mapping[str, str], params: Mapping[str, object]) -> Iterator:
    """A run nested under the study's run for one trial; its tag `optuna_state` says how it ended."""
    import mlflow

    pruned = None
    experiment = mlflow.active_run().info.experiment_id  # else MLflow files nested runs under Default
    with tracking.start_run(f"trial {trial.number}", experiment=experiment, nested=True, params=params,
                            tags={**tags, "optuna_trial": str(trial.number)}):
        try:
            yield
            mlflow.set_tag("optuna_state", "COMPLETE")
        except optuna.TrialPruned as exc:
            mlflow.set_tag("optuna_state", "PRUNED")
            pruned = exc
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:5000]
            trial.set_user_attr("error", error)
            mlflow.set_tags({"optuna_state": "FAIL", "error": error})
            raise
    if pruned is not None:
        raise pruned
