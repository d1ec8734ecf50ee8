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
from tqdm.auto import tqdm

from mcn.experiment import tracking

STUDY_KEY_TAG = "optuna_study_key"


def study_key(study: optuna.Study, storage: str) -> str:
    """Identity of a study across invocations: its storage URL and name."""
    return hashlib.sha256(f"{storage}|{study.study_name}".encode()).hexdigest()[:16]


def _parent(experiment: str, key: str, tags: Mapping[str, str], params: Mapping[str, object],
            name: str) -> tuple[str, bool]:
    """The study's parent run id, and whether this call created it.

    Two workers starting together may both create one; both then keep the earliest and the other
    is deleted, so a study has one parent run on any MLflow store without a lock.
    """
    import mlflow

    def found() -> list:
        return mlflow.search_runs([experiment], filter_string=f"tags.{STUDY_KEY_TAG} = '{key}'",
                                  order_by=["attributes.start_time ASC"], output_format="list")

    existing = found()
    if existing:
        return existing[0].info.run_id, False
    client = mlflow.tracking.MlflowClient()
    mine = client.create_run(experiment, run_name=name, tags={**tags, STUDY_KEY_TAG: key, "optuna_study": name})
    client.log_batch(mine.info.run_id, params=[mlflow.entities.Param(k, v)
                                              for k, v in tracking.flatten_params(params).items()])
    first = sorted(found(), key=lambda r: (r.info.start_time, r.info.run_id))[0].info.run_id
    if first != mine.info.run_id:
        client.delete_run(mine.info.run_id)
    return first, first == mine.info.run_id


def close_stale_trial_runs(study: optuna.Study, parent: str) -> int:
    """Mark KILLED the trial runs left RUNNING by a dead worker (their Optuna trial failed on its
    heartbeat); returns how many."""
    import mlflow

    client = mlflow.tracking.MlflowClient()
    failed = {str(t.number) for t in study.trials if t.state == optuna.trial.TrialState.FAIL}
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'")
    stale = [r for r in runs if r.data.tags.get("optuna_trial") in failed]
    for r in stale:
        client.set_tag(r.info.run_id, tracking.END_REASON_TAG,
                       "worker stopped without ending the trial (no heartbeat); Optuna marked it FAIL and queued it again")
        client.set_tag(r.info.run_id, "optuna_state", "FAIL")
        client.set_terminated(r.info.run_id, "KILLED")
    return len(stale)


@contextmanager
def study_run(study: optuna.Study, storage: str, experiment: str, tags: Mapping[str, str],
              params: Mapping[str, object]) -> Iterator:
    """The study's parent run: reopened when it exists, else created with `tags` and `params`.

    Parameters are logged once, at creation (MLflow refuses to change them). The run ends FINISHED,
    or KILLED (Ctrl-C) / FAILED with an `end_reason` tag naming the trial; trial runs a dead worker
    left RUNNING are closed as KILLED when a worker opens or finishes the study.
    """
    import mlflow

    tracking.close_dead_runs(experiment, shared_tag=STUDY_KEY_TAG)
    run_id, _ = _parent(experiment, study_key(study, storage), tags, params, study.study_name)
    run = mlflow.start_run(run_id=run_id)
    with tracking.ending(study.study_name):
        _close_stale(study, run_id)
        yield run
        _close_stale(study, run_id)  # trials found dead while this worker ran


def _close_stale(study: optuna.Study, parent: str) -> None:
    stale = close_stale_trial_runs(study, parent)
    if stale:
        tqdm.write(f"MLflow: {stale} trial run(s) of a stopped worker marked KILLED")


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
