"""Issue 9: tools/plot.py labels curves by what differs between runs, counts seeds, and skips runs without evals."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import plot  # noqa: E402

BASE = """# Parameters for FlowRLAgent:
FlowRLAgent.lr = {lr}
FlowRLAgent.regularizer = {reg}
Trainer.seed = {seed}
Trainer.num_threads = 1
make_env.task = 'dmc/cheetah-run'
"""


def fake_run(root, name, seed=0, lr="0.0003", reg="@W2Regularizer()", overlays=(), evals=True):
    run_dir = root / name
    run_dir.mkdir()
    (run_dir / "config.gin").write_text(BASE.format(lr=lr, reg=reg, seed=seed))
    gins = " ".join(f"--gin {g}" for g in ("gin/flowrl_cheetah_run.gin", *overlays))
    (run_dir / "command.txt").write_text(f"python tools/run.py {gins} --seed {seed}\n")
    records = [{"step": 100, "critic/loss": 1.0}] + ([{"step": 100, "eval/return_mean": 5.0 + seed}] if evals else [])
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def test_labels_name_the_overlays_and_bindings_that_differ(tmp_path):
    base = [fake_run(tmp_path, f"base{s}", seed=s) for s in (0, 1)]
    kl = [fake_run(tmp_path, f"kl{s}", seed=s, reg="@KLRegularizer()", overlays=["gin/ablations/reg_kl.gin"])
          for s in (0, 1, 2)]
    slow = [fake_run(tmp_path, "slow", lr="1e-05")]
    groups = {}
    for r in base + kl + slow:
        groups.setdefault(plot.group_key(r), []).append(r)
    assert list(groups.values()) == [base, kl, slow]
    assert plot.labels(list(groups.values())) == [
        "dmc/cheetah-run: FlowRLAgent.lr=0.0003 (2 seeds)",
        "dmc/cheetah-run: reg_kl, FlowRLAgent.lr=0.0003 (3 seeds)",  # the regularizer is named by its overlay
        "dmc/cheetah-run: FlowRLAgent.lr=1e-05 (1 seed)",
    ]


def test_seeds_are_counted_not_folders(tmp_path):
    runs = [fake_run(tmp_path, "a", seed=0), fake_run(tmp_path, "b", seed=0), fake_run(tmp_path, "c", seed=1)]
    assert plot.label(runs) == "dmc/cheetah-run (2 seeds, 3 runs)"


def test_folders_without_evaluations_are_skipped_with_a_warning(tmp_path):
    good = fake_run(tmp_path, "good")
    empty = fake_run(tmp_path, "empty", seed=1, evals=False)
    bare = tmp_path / "bare"
    bare.mkdir()  # a failed start's folder
    out = tmp_path / "c.png"
    proc = subprocess.run([sys.executable, "tools/plot.py", str(good), str(empty), str(bare), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: skipping '{empty}'" in proc.stderr and f"warning: skipping '{bare}'" in proc.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
    proc = subprocess.run([sys.executable, "tools/plot.py", str(bare), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no run has 'eval/return_mean'" in proc.stderr and "Traceback" not in proc.stderr


def test_bindings_of_how_a_run_ran_split_no_curve_in_plot_or_report(tmp_path):
    # One list for both (flowrl.report.runs.HOW_IT_RAN): envpool's thread count says how a run ran, not what it is.
    from flowrl.report.runs import HOW_IT_RAN

    a, b = fake_run(tmp_path, "a", seed=0), fake_run(tmp_path, "b", seed=1)
    with open(b / "config.gin", "a") as f:
        f.write("EnvpoolDMC.num_threads = 4\n")
    assert plot.IGNORED == HOW_IT_RAN and "EnvpoolDMC.num_threads" in HOW_IT_RAN
    assert plot.group_key(a) == plot.group_key(b) and plot.label([a, b]) == "dmc/cheetah-run (2 seeds)"


def test_a_file_where_a_folder_belongs_is_one_line_and_writes_nothing(tmp_path):
    run, taken = fake_run(tmp_path, "run"), tmp_path / "taken"
    taken.write_text("x\n")
    before = sorted(tmp_path.rglob("*"))
    png = taken / "c.png"
    for args, start in (([taken], f"error: '{taken}' is a file"),
                        ([run, "--out", png], f"error: --out '{png}' lies in '{taken}', which is a file")):
        proc = subprocess.run([sys.executable, "tools/plot.py", *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(start) and "; fix: " in lines[0], proc.stderr
    assert sorted(tmp_path.rglob("*")) == before and taken.read_text() == "x\n"
