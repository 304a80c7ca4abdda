"""tools/sweep.py --search end to end on real DMC physics: a tiny study whose trials differ in a value that fixes
their scores' order (cartpole-balance episodes of 5 steps score at most 5, rewards being at most 1 a step, while
episodes of 100 steps of a pole starting upright score far more), on a local Ray instance, then continued here with
its driver killed mid-trial and restarted; the report on the study; the space's and the study's bad input."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowrl.run.checkpoints import list_checkpoints
from flowrl.errors import UserError
from flowrl.run.metrics import read_metrics
from flowrl.sweep import space
from flowrl.sweep.trial import PID_FILE

optuna = pytest.importorskip("optuna", reason="Optuna is not installed (pip install -e '.[search]')")

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 800  # the pruning study's trials: long enough (~3 s past the first evaluation) for the verdict to reach a trial before its end
SHORT = 300  # where no trial is pruned
TINY = [
    "--gin", "gin/flowrl_cheetah_run.gin", "--tasks", "dmc/cartpole-balance",
    "--bind", "MLPVelocity.hidden = 16", "--bind", "QEnsemble.hidden = 16", "--bind", "ValueNetwork.hidden = 16",
    "--bind", "Trainer.batch_size = 16", "--bind", "ReplayBuffer.capacity = 1000",
    "--bind", "Trainer.warmup_steps = 100",
    "--bind", "Trainer.eval_every = 100", "--bind", "Trainer.eval_episodes = 1",
    "--bind", "Trainer.checkpoint_every = 100", "--bind", "Trainer.log_every = 50",
]  # fmt: skip
STEPS = ["--bind", f"Trainer.total_steps = {TOTAL}"]
# Random sampling with seed 14 draws 100, 5 for the first two trials, and (re-seeded with 14 + 2 when the study is
# continued after two trials) 100 for the third.
STUDY = ["--space", "{'EnvpoolDMC.max_episode_steps': choice(5, 100)}", "--sampler", "random", "--search-seed", "14",
         "--pruner", "median", "--prune-startup", "1", "--parallel", "1"]


def sweep(*args, timeout=300):
    return subprocess.run([sys.executable, "tools/sweep.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def load(out: Path):
    return optuna.load_study(study_name="flowrl", storage=f"sqlite:///{out / 'study.db'}")


def evals(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["eval/return_mean"] for r in read_metrics(run_dir) if "eval/return_mean" in r}


def last_checkpoint(run_dir: Path) -> int:
    return int(list_checkpoints(run_dir)[-1].stem.split("_")[1])


@pytest.mark.slow
def test_a_study_prunes_on_ray_survives_a_killed_driver_and_reports(tmp_path):
    out = tmp_path / "study"
    trial_dir = [out / "dmc-cartpole-balance" / f"t{i:04d}" / "s0" for i in range(3)]
    has_ray = _has("ray")

    # Two trials on a local Ray instance: the short-episode one is pruned at its first evaluation.
    first = sweep(*TINY, *STEPS, *STUDY, "--search", "2", "--out", str(out), *(["--ray", "--ray-cpus", "1"] * has_ray))
    assert first.returncode == 0, first.stderr[-3000:]
    study = load(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert [t.params["EnvpoolDMC.max_episode_steps"] for t in study.trials] == [100, 5]
    full, pruned = evals(trial_dir[0]), evals(trial_dir[1])
    # The driver reads a trial's evaluations once a second and the trial reads the verdict four times a second, so a
    # fast trial (~200 env steps a second) logs a few more before it stops: it is pruned at the newest evaluation the
    # driver saw, and stops with a checkpoint before its end.
    at = json.loads((trial_dir[1] / "pruned.json").read_text())["step"]
    assert sorted(full) == list(range(100, TOTAL + 1, 100)) and at in pruned and max(pruned) < TOTAL
    assert sorted(pruned) == list(range(100, max(pruned) + 1, 100))
    assert pruned[at] <= 5.0 < full[at]  # 5 steps of rewards <= 1; the median of one finished trial is its value
    assert 100 <= last_checkpoint(trial_dir[1]) < TOTAL  # it ended with a checkpoint, early
    # Its value: the last evaluation it logged (the driver reports each one it reads until the run has stopped)
    assert study.trials[1].value == pruned[max(pruned)] and study.trials[0].value == full[TOTAL]

    # Continued here to three trials; the driver is killed while the third runs, then started again. Without a
    # pruner: the third trial's noisy curve may dip below the first's median at some evaluation.
    args = [*TINY, *STEPS, *STUDY, "--pruner", "none", "--search", "3", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "tools/sweep.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    child = _mid_run(trial_dir[2], time.time() + 300)
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.time() + 60
    while _alive(child) and time.time() < deadline:  # the orphaned run got SIGTERM: it checkpoints and stops
        time.sleep(0.2)
    assert not _alive(child) and last_checkpoint(trial_dir[2]) < TOTAL
    assert [t.state.name for t in load(out).trials] == ["COMPLETE", "PRUNED", "RUNNING"]

    again = sweep(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already ended, 1 to resume" in again.stderr
    commands = [(d / "command.txt").read_text().splitlines() for d in trial_dir]
    assert [len(c) for c in commands] == [1, 1, 2] and "--resume" in commands[2][1]  # nothing finished ran again
    study = load(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    finals = {t.number: evals(trial_dir[t.number])[TOTAL] for t in study.trials if t.state.name == "COMPLETE"}
    assert study.best_value == max(finals.values()) and study.best_trial.number == max(finals, key=finals.get)
    assert study.best_trial.params == {"EnvpoolDMC.max_episode_steps": 100}

    # The report: figures, and a table holding the study's values.
    report = subprocess.run([sys.executable, "tools/report.py", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (out / "study_history.png").stat().st_size > 0 and (out / "study_importances.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d,]+) \| (\d+) \|$", text, re.M)
    assert {int(n): float(v) for n, v, _, _ in rows} == {n: round(v, 2) for n, v in finals.items()}
    assert re.search(r"trial 1 at env step \d+ \(" + f"{pruned[max(pruned)]:.2f} at its last report", text)
    numbers = json.loads((out / "report.json").read_text())["study"]
    assert [(t["number"], t["state"], t["value"]) for t in numbers["trials"]] == [
        (t.number, t.state.name.lower(), t.value) for t in study.trials]
    assert numbers["importances"] == {"EnvpoolDMC.max_episode_steps": 1.0}


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _mid_run(run_dir: Path, deadline: float) -> int:
    """The pid of the run in ``run_dir`` once it is past a checkpoint and before its end."""
    while time.time() < deadline:
        try:
            pid = int((run_dir / PID_FILE).read_text().split()[1])
            if list_checkpoints(run_dir) and max(evals(run_dir), default=0) >= 100:
                return pid
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} did not get past its first checkpoint in time")


@pytest.mark.parametrize("text, message", [
    ("{'FlowRLAgent.expectile': uniform(0.95, 0.7)}", "needs low < high; fix: uniform(0.7, 0.95)"),
    ("{'W2Regularizer.lam': log_uniform(0, 1)}", "low must be above 0"),
    ("{'FlowRLAgent.expectile': normal(0.9, 0.1)}", "'normal(0.9, 0.1)' is not a distribution"),
    ("{'FlowRLAgent.expectile': uniform(0.7)}", "takes 2 to 3 positional values"),
    ("{'FlowRLAgent.expectile': choice(0.9, 0.9)}", "lists a value twice"),
    ("{'overlay': choice(None, 'reg_kl')}", "is not a .gin file"),
    ("{'Trainer.seed': choice(0, 1)}", "set it with --seeds"),
    ("{'Trainer.total_steps': int_uniform(1000, 2000)}", "one budget for every trial"),
    ("['FlowRLAgent.expectile']", "not a dict of distributions"),
    ("{'FlowRLAgent.expectile': uniform(0.7, 0.95}", "malformed --space"),
])  # fmt: skip
def test_a_malformed_space_is_refused_with_its_fix(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        space.load(text)


def test_a_space_is_read_into_bindings_and_overlays():
    params = space.load("{'FlowRLAgent.expectile': uniform(0.7, 0.95, step=0.05), 'W2Regularizer.lam': "
                        "log_uniform(1e-3, 1), 'overlay': choice(None, 'gin/ablations/reg_kl.gin'), "
                        "'FlowRLAgent.regularizer': choice('@KLRegularizer()', '@W2Regularizer()')}")
    assert [(p.name, p.kind) for p in params] == [("FlowRLAgent.expectile", "uniform"),
                                                  ("W2Regularizer.lam", "log_uniform"), ("overlay", "choice"),
                                                  ("FlowRLAgent.regularizer", "choice")]
    assert params[0].grid() == [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    overlays, binds = space.apply(params, {"FlowRLAgent.expectile": 0.8, "W2Regularizer.lam": 0.01,
                                           "overlay": "gin/ablations/reg_kl.gin",
                                           "FlowRLAgent.regularizer": "@KLRegularizer()"})
    assert overlays == ["gin/ablations/reg_kl.gin"]
    assert binds == ["FlowRLAgent.expectile = 0.8", "W2Regularizer.lam = 0.01",
                     "FlowRLAgent.regularizer = @KLRegularizer()"]


def test_bad_search_input_is_one_line(tmp_path):
    out = tmp_path / "study"
    proc = sweep("--gin", "gin/flowrl_cheetah_run.gin", "--out", str(out), "--search", "0", "--space",
                 "{'FlowRLAgent.expectile': uniform(0.7, 0.95)}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --search 0 asks for no trial; fix: --search 8 (the study's number of trials)"]
    assert not out.exists()  # nothing asked, nothing run


@pytest.mark.parametrize("text, message", [
    ("{'FlowRLAgent.no_such_value': uniform(0.7, 0.95)}", "--space 'FlowRLAgent.no_such_value' = 0.7: bad gin config"),
    ("{'FlowRLAgent.expectile': uniform(0.7, 1.0)}",
     "--space 'FlowRLAgent.expectile' = 1.0: FlowRLAgent.expectile = 1.0 is outside (0.0, 1.0)"),
    ("{'overlay': choice(None, 'gin/ablations/absent.gin')}", "overlay 'gin/ablations/absent.gin' not found"),
    ("{'Trainer.batch_size': choice(16, 32)}", "--space 'Trainer.batch_size' is also set by --bind"),
])  # fmt: skip
def test_a_space_the_config_cannot_take_is_refused_before_anything_runs(tmp_path, text, message):
    from flowrl.sweep.search import run_search

    out = tmp_path / "study"
    with pytest.raises(UserError, match=re.escape(message)) as e:
        run_search(["gin/flowrl_cheetah_run.gin"], [], "0", ["Trainer.batch_size = 16"], out, 2, text)
    assert "fix:" in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


def test_a_study_continues_only_under_its_own_space(tmp_path):
    from flowrl.sweep.search import run_search

    out = tmp_path / "study"
    run_search(["gin/flowrl_cheetah_run.gin"], [], "0", [], out, 2, "{'MLPVelocity.hidden': choice(16, 32)}",
               dry_run=True)
    with pytest.raises(UserError) as e:
        run_search(["gin/flowrl_cheetah_run.gin"], [], "0", [], out, 2, "{'MLPVelocity.hidden': choice(16, 64)}",
                   dry_run=True)
    assert str(e.value) == (
        f"the study in {out.resolve()} was started with other settings ('MLPVelocity.hidden' differs, and it sets "
        f"the shape of what the trials' checkpoints hold): its trials and their checkpoints cannot continue under "
        f"these; fix: the study's own settings ({out.resolve() / 'study.json'}) or a new --out")
    run_search(["gin/flowrl_cheetah_run.gin"], [], "0", [], out, 4, "{'MLPVelocity.hidden': choice(16, 32)}",
               sampler="random", pruner="asha", dry_run=True)  # more trials, another sampler and pruner: fine


@pytest.mark.parametrize("name, warmup, stopped", [
    ("median", 0, 100), ("median", 200, 200), ("asha", 0, 100), ("asha", 200, 200), ("none", 0, None)])
def test_a_pruner_stops_the_worse_trial_at_its_first_rung_after_the_warmup(name, warmup, stopped):
    # Evaluations every 100 env steps of 400; trial 0 scores 5 throughout and ends, trial 1 scores 1. Median with one
    # finished trial: 1 < 5 at the first step it may prune. ASHA (reduction factor 3): its first rung is at the first
    # evaluation (or the warm-up), where 1 is not in the top third of {5, 1}.
    from flowrl.sweep.search import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner(optuna, name, 1, warmup, 100, 400))
    for value in (5.0, 1.0):
        trial, at = study.ask(), None
        for step in (100, 200, 300, 400):
            trial.report(value, step)
            if step < 400 and trial.should_prune():
                at = step
                break
        if at is None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert at == stopped


def test_the_auc_so_far_grows_to_the_reports_auc():
    # Evaluations 40, 30, 50, 20 at 1k..4k env steps: trapezoids of 35k, 40k and 35k return-steps over the 3k-step span.
    from flowrl.sweep.search import objective_curve

    evals = [(1000, 40.0), (2000, 30.0), (3000, 50.0), (4000, 20.0)]
    assert objective_curve(evals, "final", 4000) == evals
    # pytest >= 9.2's approx refuses nested structures: compare steps exactly and values approximately.
    curve = objective_curve(evals, "auc", 4000)
    assert [step for step, _ in curve] == [1000, 2000, 3000, 4000]
    assert [value for _, value in curve] == pytest.approx([0.0, 35 / 3, 25.0, 110 / 3])


@pytest.mark.slow
def test_a_study_with_storage_mirrors_its_trials_and_files_there(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install -e '.[sweep]')")
    out, bucket = tmp_path / "study", tmp_path / "bucket"
    args = [*TINY, "--bind", f"Trainer.total_steps = {SHORT}", *STUDY, "--pruner", "none", "--search", "2", "--out",
            str(out), "--storage", str(bucket)]
    first = sweep(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"trials kept in {bucket / 'study'}" in first.stderr
    study = load(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    kept = bucket / "study"
    assert (kept / "study.json").read_bytes() == (out / "study.json").read_bytes()
    assert (kept / "study.db").is_file()  # the report can read the study from the storage
    for i in range(2):
        name = f"dmc-cartpole-balance/t{i:04d}/s0"
        trial, local = kept / name, out / name
        assert last_checkpoint(trial) == SHORT and evals(trial) == evals(local)
        assert sorted(evals(trial)) == [100, 200, 300]
        assert not (trial / PID_FILE).exists()

    again = sweep(*args)  # every trial is finished in the storage: nothing runs again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already ended, 0 to resume" in again.stderr
    assert [len((out / "dmc-cartpole-balance" / f"t{i:04d}" / "s0" / "command.txt").read_text().splitlines())
            for i in range(2)] == [1, 1]


@pytest.mark.parametrize("search", [False, True])
def test_an_out_that_is_a_file_is_one_line_and_writes_nothing(tmp_path, search):
    out = tmp_path / "taken"
    out.write_text("not a folder\n")
    extra = ["--search", "2", "--space", "{'MLPVelocity.hidden': choice(16, 32)}"] if search else []
    for where in (out, out / "sweep"):
        proc = sweep("--gin", "gin/flowrl_cheetah_run.gin", "--out", str(where), *extra, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and " is a file" in lines[0] and "; fix: " in lines[0], proc.stderr
        assert lines[0].startswith(f"error: --out '{where}'")
    assert out.read_text() == "not a folder\n" and sorted(tmp_path.iterdir()) == [out]
