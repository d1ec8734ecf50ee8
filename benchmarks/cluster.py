"""`benchmarks.run --cluster`: the model x fold grid on Dask distributed, results in the shared --out.

`local:N` starts a local cluster of N worker processes; `tcp://HOST:8786` uses a running scheduler
(`dask scheduler` on one machine, `dask worker tcp://HOST:8786` on each of the others, every one
seeing the data set and --out at the same path, e.g. on NFS). Each task is one fold of one model
and writes that fold exactly where a sequential run would (CNN fold folders renamed into place,
classical fold records written atomically), so the driver then runs the ordinary sequential code,
which finds every fold on disk, loads it, logs MLflow and writes the same table. Resume works as
before: folds already on disk are not submitted again.

Two waves: the CNNs' folds and the classical models on handcrafted features first; then the
classical models on embeddings, which need the embedding CNN's fold models from the first wave.
A task that fails is reported and left to the driver, which retries it and records the error.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from benchmarks import results as results_io

LOCAL = re.compile(r"local:(\d+)$")


def check_address(address: str) -> None:
    """Refuse a --cluster value that is neither local:N nor a scheduler address, before any work."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise ValueError("--cluster needs Dask distributed: pip install -e \".[dask]\"")
    local = LOCAL.match(address)
    if local and int(local.group(1)) >= 1:
        return
    if not local and re.match(r"(tcp|tls)://[^:/]+:\d+$", address):
        return
    raise ValueError(f"--cluster {address!r}: give local:N (N >= 1 worker processes) or a Dask scheduler "
                     "address tcp://HOST:PORT")


def connect(address: str):
    """A Dask client: a new local cluster for local:N, else the running scheduler at `address`."""
    from distributed import Client, LocalCluster

    local = LOCAL.match(address)
    if local:
        cluster = LocalCluster(n_workers=int(local.group(1)), threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        return Client(cluster)
    try:
        return Client(address, timeout=30)
    except OSError as exc:
        raise ValueError(f"--cluster {address}: cannot reach the Dask scheduler ({exc})") from exc


@lru_cache(maxsize=2)
def _dataset(root: str, pixel_size_nm: float | None, fingerprint: str):
    """A worker's copy of the data set, loaded once per worker process and checked to be the driver's."""
    from mcn.data.load import load_dataset

    dataset = load_dataset(root, pixel_size_nm=pixel_size_nm)
    if dataset.fingerprint() != fingerprint:
        raise ValueError(f"{root}: this worker sees other data (fingerprint {dataset.fingerprint()}, "
                         f"driver {fingerprint})")
    return dataset


def cnn_fold(backend: str, data: tuple, model: str, fold, config, hparams: dict, out_dir: str) -> str:
    """Train one CNN fold into out_dir/fold_<k>/ (renamed into place when complete)."""
    import mcn

    mcn.select_backend(backend)
    from mcn.train import train_fold

    train_fold(model, _dataset(*data), fold, config, hparams, out_dir)
    return f"{model} fold {fold.index}"


def classical_fold(clf: str, model: str, x, labels: np.ndarray, fold, class_names, seed: int,
                   cost: float, path: str, params: dict) -> str:
    """Fit one classical fold on its features (all crystals' matrix, or the fold's (train, test)
    pair when cross-fitted) and write its record atomically."""
    from benchmarks.run import fit_classical_folds

    fit_classical_folds(clf, x, labels, [fold], class_names, seed, 1, {fold.index: cost}, {fold.index: Path(path)},
                        params)
    return f"{model} fold {fold.index}"


def run_grid(bench) -> int:
    """Compute every missing fold of `bench`'s models on the cluster; the number of failed tasks."""
    from mcn.train import TrainConfig, fold_dir
    from mcn.train.folds import RESULT_FILE

    args, out = bench.args, bench.out
    missing = [m for m in bench.models for f in bench.folds
               if not (fold_dir(out / "cnn" / m, f.index) / RESULT_FILE if ":" not in m
                       else results_io.classical_fold_path(out, m, f.index)).is_file()]
    if not missing:
        tqdm.write(f"cluster: every fold is in {out} already; nothing to submit")
        return 0
    client = connect(args.cluster)
    workers = len(client.scheduler_info().get("workers", {}))
    tqdm.write(f"cluster: {args.cluster} ({workers} worker(s)); folds are written to {out}")
    data = (str(bench.dataset.root), args.pixel_size_nm, bench.config["data_fingerprint"])
    cnns = [m for m in bench.models if ":" not in m]
    classical = [m for m in bench.models if ":" in m]
    failed = 0
    try:
        wave = []
        for model in cnns:
            config = TrainConfig(**bench.profile.train_kwargs(model), seed=args.seed, progress=False)
            folder = out / "cnn" / model
            todo = [fold for fold in bench.folds if not (fold_dir(folder, fold.index) / RESULT_FILE).is_file()]
            wave += [client.submit(cnn_fold, args.backend, data, model, fold, config,
                                   bench.profile.model_hparams(model), str(folder), pure=False) for fold in todo]
            if todo:
                bench.trained.append(model)
        wave += _classical_tasks(client, bench, [m for m in classical if m.endswith(":handcrafted")])
        failed += _wait(client, wave, args.quiet)
        if any(not m.endswith(":handcrafted") for m in classical) and args.embedding_model not in bench.failed:
            failed += _wait(client, _classical_tasks(client, bench, [m for m in classical
                                                                    if not m.endswith(":handcrafted")]), args.quiet)
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None and LOCAL.match(args.cluster):
            cluster.close()
    return failed


def _classical_tasks(client, bench, models: list[str]) -> list:
    """One task per missing fold of each classical model; features made once here, on the driver."""
    tasks, labels = [], bench.dataset.labels
    for model in models:
        base, params = bench._base(model)
        clf, _, feature_set = base.partition(":")
        todo = [f for f in bench.folds
                if not results_io.classical_fold_path(bench.out, model, f.index).is_file()]
        if not todo:
            continue
        bench.trained.append(model)
        x_for_fold, cost = bench._fold_features(feature_set)
        for fold in todo:
            path = results_io.classical_fold_path(bench.out, model, fold.index)
            x = x_for_fold(fold)
            tasks.append(client.submit(classical_fold, clf, model, x if isinstance(x, tuple) else np.asarray(x),
                                       labels, fold, bench.dataset.class_names, bench.args.seed, cost[fold.index],
                                       str(path), params, pure=False))
    return tasks


def _wait(client, futures: list, quiet: bool) -> int:
    """Wait for `futures` with a progress bar; report each failure in one line; how many failed."""
    from distributed import as_completed

    failed = 0
    for future in tqdm(as_completed(futures), total=len(futures), desc="cluster folds", unit="fold",
                       disable=quiet):
        if future.status == "error":
            failed += 1
            exc = future.exception()
            tqdm.write(f"cluster task {future.key}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        else:
            tqdm.write(f"{future.result()}: done on the cluster")
    return failed
