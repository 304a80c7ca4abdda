"""Sweep storage (flowrl/sweep/storage.py, synced.py): a trial folder mirrored to a local file system and to S3 (a
moto server on this machine) and restored from them, a storage that fills up mid-sync, and bad storage in one line."""

import os
import threading
import time
import subprocess
import uuid
from pathlib import Path

import pytest

pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install -e '.[sweep]')")

from flowrl.sweep import run_sweep  # noqa: E402
from flowrl.sweep.plan import Trial  # noqa: E402
from flowrl.sweep.ship import EXCLUDES, runtime_env  # noqa: E402
from flowrl.sweep.storage import Storage, StorageError, download  # noqa: E402
from flowrl.sweep.synced import TrialSync, finished_in, read_progress  # noqa: E402
from flowrl.sweep.trial import LOG_FILE, PID_FILE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
METRICS = b'{"step": 100}\n{"step": 150, "eval/return_mean": 7.5}\n'


def trial_folder(path: Path, steps=(100,), size: int = 64) -> Path:
    """A run folder as tools/run.py leaves it: checkpoints, metrics, its lock, the running mark, a temporary file."""
    (path / "checkpoints").mkdir(parents=True)
    for step in steps:
        (path / "checkpoints" / f"step_{step:09d}.pt").write_bytes(bytes([step % 251]) * size)
    (path / "metrics.jsonl").write_bytes(METRICS)
    (path / ".lock").write_text("123\n")
    (path / PID_FILE).write_text("host 123\n")
    (path / "checkpoints" / ".step_000000999.pt.tmp").write_bytes(b"partial")
    return path


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def round_trip(store: Storage, tmp_path: Path):
    """Mirror a trial up as it runs (a new checkpoint, the old one pruned, the run ending), restore it elsewhere."""
    local = trial_folder(tmp_path / "node-a" / "t")
    sync = TrialSync(store, local, every=3600)
    assert sync.push(full=True)
    assert set(store.files()) == {"checkpoints/step_000000100.pt", "metrics.jsonl", PID_FILE}  # no lock, no tmp
    p = read_progress(store)
    assert (p.checkpoint_step, p.steps, p.last_eval, p.running) == (100, 150, 7.5, True)

    # The run writes step 200 and prunes step 100: a new checkpoint goes up at once, with the changed metrics.
    (local / "checkpoints" / "step_000000200.pt").write_bytes(b"\x02" * 64)
    (local / "checkpoints" / "step_000000100.pt").unlink()
    (local / "metrics.jsonl").write_bytes(METRICS + b'{"step": 200}\n')
    assert sync.push()
    assert store.read_bytes("checkpoints/step_000000200.pt") == b"\x02" * 64
    assert store.read_bytes("metrics.jsonl").endswith(b'{"step": 200}\n')
    assert "checkpoints/step_000000100.pt" not in store.files()
    (local / PID_FILE).unlink()  # the run ended
    assert sync.push(full=True) and PID_FILE not in store.files()
    assert not [n for n in store.files() if ".tmp" in n]

    # A retry on another node restores the folder; one whose own copy is newer keeps it.
    other = tmp_path / "node-b" / "t"
    said = TrialSync(store, other).restore()
    assert "checkpoint step 200" in said
    assert contents(other) == {k: v for k, v in contents(local).items() if not k.startswith(".")
                               and not k.endswith(".tmp")}
    newer = trial_folder(tmp_path / "node-c" / "t", steps=(300,))
    before = contents(newer)
    assert "kept the local copy" in TrialSync(store, newer).restore()
    assert contents(newer) == before
    trial = Trial("dmc/cheetah-run", "base", 0, str(local), [], [], 200)
    return trial


def test_a_trial_folder_round_trips_through_a_local_storage(tmp_path):
    root = Storage((tmp_path / "bucket").as_uri())
    root.check()
    sweep = root.join("grid")
    trial = round_trip(sweep.join("dmc-cheetah-run/base/s0"), tmp_path)
    assert finished_in(sweep, trial) and not finished_in(sweep, Trial(**{**trial.__dict__, "total_steps": 300}))
    # What the report fetches: everything but checkpoints and hidden files.
    assert download(sweep, tmp_path / "got") == 1
    assert contents(tmp_path / "got") == {"dmc-cheetah-run/base/s0/metrics.jsonl": METRICS + b'{"step": 200}\n'}


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on this machine and a bucket in it; yields the URI query that points pyarrow at it."""
    server_mod = pytest.importorskip("moto.server", reason="moto is not installed (pip install -e '.[dev]')")
    import pyarrow.fs as pafs

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    query = f"?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                      allow_bucket_creation=True).create_dir("bkt")
    yield query
    server.stop()


def test_a_trial_folder_round_trips_through_s3(s3, tmp_path):
    store = Storage(f"s3://bkt/sweeps{s3}")
    store.check()
    sweep = store.join("grid")
    assert str(sweep) == "s3://bkt/sweeps/grid" and "endpoint_override" in sweep.uri  # messages hide the query
    trial = round_trip(sweep.join("dmc-cheetah-run/base/s0"), tmp_path)
    assert finished_in(sweep, trial)


def test_refused_credentials_and_a_missing_bucket_are_one_line(s3, monkeypatch):
    with pytest.raises(StorageError) as missing:
        Storage(f"s3://no-such-bucket/sweeps{s3}").check()
    assert str(missing.value).startswith("storage 's3://no-such-bucket/sweeps': the bucket 'no-such-bucket' does not")
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server checks keys from now on
    with pytest.raises(StorageError) as refused:
        Storage(f"s3://bkt/sweeps{s3}").check()
    assert "refused access" in str(refused.value) and "fix: give this machine credentials" in str(refused.value)
    for e in (missing.value, refused.value):
        assert "\n" not in str(e) and "endpoint_override" not in str(e)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a storage that fills up (needs the right to mount, as root in CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); a full storage is not tested")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_storage_that_fills_up_keeps_its_last_good_checkpoint_and_the_local_copy(small_disk, tmp_path):
    store = Storage(str(small_disk)).join("grid", "t")
    local = trial_folder(tmp_path / "t", steps=(100,), size=64 * 1024)
    sync = TrialSync(store, local, every=3600)
    assert sync.push(full=True)
    (local / "checkpoints" / "step_000000200.pt").write_bytes(b"\x02" * 300 * 1024)  # more than is left
    (local / "checkpoints" / "step_000000100.pt").unlink()
    assert not sync.push()
    assert sync.error.startswith(f"storage '{small_disk}/grid/t' is full (") and "\n" not in sync.error
    assert store.read_bytes("checkpoints/step_000000100.pt") == bytes([100]) * 64 * 1024  # never deleted
    assert set(store.files()) == {"checkpoints/step_000000100.pt", "metrics.jsonl", PID_FILE}  # no partial file
    assert (local / "checkpoints" / "step_000000200.pt").stat().st_size == 300 * 1024
    assert "is full" in (local / LOG_FILE).read_text() and "the run goes on" in (local / LOG_FILE).read_text()
    # Space again: the next upload catches up, and only then is the old checkpoint deleted.
    (local / "checkpoints" / "step_000000200.pt").write_bytes(b"\x02" * 64 * 1024)
    assert sync.push(full=True) and sync.error is None
    assert checkpoint_names(store) == ["checkpoints/step_000000200.pt"]


def checkpoint_names(store: Storage) -> list[str]:
    return sorted(n for n in store.files() if n.startswith("checkpoints/"))


def test_bad_storage_stops_the_sweep_in_one_line_before_anything_runs(tmp_path):
    out = tmp_path / "grid"
    with pytest.raises(StorageError) as bad:
        run_sweep(["gin/flowrl_cheetah_run.gin"], [], [], "0", [], out, storage="foo://bucket/sweeps")
    assert str(bad.value) == ("storage 'foo://bucket/sweeps': no file system for the scheme 'foo://' is installed; "
                              "fix: use s3://, gs://, hdfs://, file:// or a path")
    assert not out.exists()  # checked before the plan is written
    with pytest.raises(StorageError, match=r"^storage '/proc/no/such/place': .*; fix: check the URI"):
        Storage("/proc/no/such/place").check()


def test_the_job_ships_the_checkout_and_on_request_its_requirements(tmp_path):
    env = runtime_env(exclude=[ROOT / "runs" / "grid", tmp_path])
    assert env["working_dir"] == str(ROOT) and "pip" not in env
    assert env["excludes"] == [*EXCLUDES, "runs/grid"]  # a folder outside the checkout is not shipped anyway
    deps = runtime_env(deps=True)["pip"]["packages"]
    assert "gin-config==0.5.0" in deps and any(d.startswith("torch") for d in deps)


def test_a_plain_path_is_a_storage_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Storage("bucket").join(f"s-{uuid.uuid4().hex[:6]}")
    store.write_bytes("a/b.txt", b"x")
    assert (tmp_path / "bucket" / store.name / "a" / "b.txt").read_bytes() == b"x"
    assert os.listdir(tmp_path / "bucket" / store.name / "a") == ["b.txt"]


def test_a_checkpoint_goes_up_after_the_files_that_say_which_run_it_belongs_to(tmp_path):
    # A node lost right after a checkpoint's upload (the two-node Ray test kills it then) must leave a folder that
    # resumes: config.gin, bindings.json, command.txt and provenance.jsonl reach the storage before the checkpoint,
    # the metrics after it.
    local = trial_folder(tmp_path / "node-a" / "t")
    for name in ("config.gin", "bindings.json", "command.txt", "provenance.jsonl"):
        (local / name).write_text(f"{name}\n")
    store = Storage(str(tmp_path / "bucket"))
    order = []
    put = store.put
    store.put = lambda path, name: order.append(name) or put(path, name)
    assert TrialSync(store, local, every=3600).push()  # a new checkpoint: everything goes up
    ckpt = order.index("checkpoints/step_000000100.pt")
    assert {"config.gin", "bindings.json", "command.txt", "provenance.jsonl"} <= set(order[:ckpt])
    assert order.index("metrics.jsonl") > ckpt


def test_a_trial_stops_with_a_checkpoint_when_its_storage_gets_the_studys_verdict(tmp_path):
    """The study's ``pruned.json`` reaches a trial through the storage alone (no signal from the driver, which may be
    on another machine): the run stops with a checkpoint, before its end, and the trial ends ``pruned``."""
    from flowrl.sweep.synced import run_synced
    from flowrl.sweep.trial import PRUNED_FILE, progress

    store = Storage(str(tmp_path / "store")).join("t")
    local = tmp_path / "node" / "t"
    total = 3000
    binds = ["MLPVelocity.hidden = 16", "QEnsemble.hidden = 16", "ValueNetwork.hidden = 16", "Trainer.batch_size = 16",
             "Trainer.warmup_steps = 100", f"Trainer.total_steps = {total}", "Trainer.checkpoint_every = 100",
             "Trainer.eval_every = 100", "Trainer.eval_episodes = 1", "EnvpoolDMC.max_episode_steps = 5",
             "make_env.task = 'dmc/cartpole-balance'"]
    trial = Trial("dmc/cartpole-balance", "base", 0, str(local), ["gin/flowrl_cheetah_run.gin"], binds, total)

    def judge():  # the driver's verdict, once the run has trained a little
        deadline = time.monotonic() + 240
        while progress(local).checkpoint_step < 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        store.write_bytes(PRUNED_FILE, b'{"step": 100, "value": 1.0}\n')

    threading.Thread(target=judge, daemon=True).start()
    result = run_synced(trial, 1, store, every=0.5, poll=0.2)
    assert result["status"] == "pruned" and result["returncode"] == 143, result
    step = progress(local).checkpoint_step
    assert 100 <= step < total and f"checkpoints/step_{step:09d}.pt" in store.files()  # mirrored, not lost
    assert f"the study pruned it ({PRUNED_FILE})" in (local / LOG_FILE).read_text()
