"""The MLflow store: safe first use from several processes, one-line refusal of a read-only store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FIRST_USE = """
import sys, time
from pathlib import Path
import mlflow
from mcn.experiment import tracking
uri, ready, go, name = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
uri = tracking.configure(uri)
experiment = tracking.experiment_id("shared", uri)
with tracking.start_run(name, experiment=experiment, tags={"worker": name}):
    tracking.log_metrics({"f1_macro": 0.5})
"""


def test_two_processes_on_a_fresh_sqlite_store_both_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_USE, uri, str(tmp_path / f"ready{i}"), str(go),
                               f"worker{i}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # both have imported mlflow: they reach the fresh store together
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["shared"], output_format="list")
    assert sorted(r.data.tags["worker"] for r in runs) == ["worker0", "worker1"]
    assert all(r.info.status == "FINISHED" and r.data.metrics["f1_macro"] == 0.5 for r in runs)


def _unprivileged(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a command that file modes bind: root loses the capabilities that let it write anywhere."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be made")
        caps = "-dac_override,-dac_read_search"
        argv = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "mlflow.db").touch()
    (folder / "mlflow.db").chmod(0o444)
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("flags, message", [
    (lambda ro: ["--out", str(ro / "out")], "error: --out {ro}/out: {ro} is read-only"),
    (lambda ro: ["--out", str(ro.parent / "w" / "out"), "--tracking-uri", f"sqlite:///{ro}/mlflow.db"],
     "error: MLflow store sqlite:///{ro}/mlflow.db: {ro}/mlflow.db is read-only"),
])
def test_read_only_out_or_store_is_refused_in_one_line(read_only, flags, message):
    (read_only.parent / "w").mkdir()
    (read_only.parent / "data").mkdir()
    done = _unprivileged([sys.executable, "-m", "benchmarks.run", "--data", str(read_only.parent / "data"),
                          "--profile", "smoke",
                     *flags(read_only)], ROOT)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == message.format(ro=read_only), done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_left_running_by_a_dead_process_is_marked_killed(tmp_path):
    import mlflow

    from mcn.experiment import tracking

    uri = tracking.configure(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracking.experiment_id("killed", uri)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    tags = tracking.run_tags(backend="torch", seed=0, data_fingerprint="x")
    client = mlflow.tracking.MlflowClient()
    dead = client.create_run(experiment, tags={**tags, tracking.PID_TAG: gone.stdout.strip()}).info.run_id
    alive = client.create_run(experiment, tags=tags).info.run_id  # this process: still running
    other = client.create_run(experiment, tags={**tags, tracking.HOST_TAG: "another-machine",
                                                tracking.PID_TAG: gone.stdout.strip()}).info.run_id
    assert tracking.close_dead_runs(experiment) == 1
    assert client.get_run(dead).info.status == "KILLED" and "killed" in client.get_run(dead).data.tags["end_reason"]
    assert client.get_run(alive).info.status == client.get_run(other).info.status == "RUNNING"
