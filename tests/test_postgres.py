"""Optuna studies on a real PostgreSQL server: the multi-machine path (`--storage postgresql://...`).

The fixture starts a throwaway server (initdb + pg_ctl from the Debian `postgresql` package) in a
temporary folder on a free port, as the `postgres` user when the tests run as root (the server
refuses root), and removes it afterwards. Workers are real processes, as on several machines.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if isinstance(found, list) and found else found or None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """URL of a fresh PostgreSQL server; skipped where the server or the driver is not installed."""
    pytest.importorskip("psycopg2", reason="PostgreSQL driver missing: pip install -e '.[postgres]'")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    prefix = []
    folder = Path(tempfile.mkdtemp(prefix="mcn-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: PostgreSQL refuses to run as root")
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "mcn", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                    f"-k {folder} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://mcn@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def argv(tiny_scene_dir, tmp_path, postgres_url):
    return ["--model", "logreg", "--profile", "smoke", "--data", str(tiny_scene_dir), "--folds", "2", "--quiet",
            "--storage", postgres_url, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--out", str(tmp_path / "out")]


WORKER = """
import sys, time
from studies import hpo, objectives
if sys.argv[1] == "hang":  # a worker that is killed in the middle of its first trial
    objectives.score_classifier = lambda *args, **kwargs: time.sleep(600)
hpo.main(sys.argv[2:])
"""


def _worker(mode: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, mode, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_workers_on_postgresql_share_one_study(argv, postgres_url):
    argv = [*argv, "--study-name", "pg-shared", "--trials", "6"]
    workers = [_worker("run", argv) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = optuna.load_study(study_name="pg-shared", storage=postgres_url).trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["C"] for t in trials}) == 6
    assert all(any(f"trial {t.number}:" in out for out in outputs) for t in trials)  # each ran in one worker


def test_a_killed_workers_trial_is_failed_and_run_again(argv, postgres_url):
    argv = [*argv, "--study-name", "pg-killed", "--heartbeat", "1"]
    hanging = _worker("hang", [*argv, "--trials", "2"])
    deadline = time.monotonic() + 300
    running = []
    while not running and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="pg-killed", storage=postgres_url)
            running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            continue
    assert running, hanging.communicate(timeout=5)[0] if hanging.poll() is not None else "no trial started"
    hanging.send_signal(signal.SIGKILL)
    hanging.wait()
    time.sleep(4.5)  # more than three missed heartbeats
    from studies import hpo

    hpo.main([*argv, "--trials", "2"])  # the next worker (here, in this process) finds the dead trial
    trials = optuna.load_study(study_name="pg-killed", storage=postgres_url).trials
    states = [t.state.name for t in trials]
    assert states[0] == "FAIL" and states.count("COMPLETE") == 2 and "RUNNING" not in states
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].params == trials[0].params and retried[0].state.name == "COMPLETE"
