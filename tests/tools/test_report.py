"""tools/report.py on hand-made run folders: its numbers against values computed by hand (exact point estimates;
bootstrap CI endpoints against the exact or a long independent bootstrap), grouping, the files, and bad input."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rliable", reason="rliable is not installed (pip install -e '.[sweep]')")

from flowrl.run import provenance  # noqa: E402
from flowrl.report import compute  # noqa: E402
from flowrl.report.runs import load_runs  # noqa: E402
from flowrl.report.stats import normaliser  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"dmc/cheetah-run": "gin/flowrl_cheetah_run.gin", "dmc/walker-run": "gin/flowrl_walker_run.gin"}
# Final eval returns, per variant and task, of seeds 0..3; each curve is (final / 2, final) at steps 1000, 2000.
FINAL = {
    "base": {"dmc/cheetah-run": [100, 200, 300, 400], "dmc/walker-run": [50, 150, 250, 950]},
    "reg_kl": {"dmc/cheetah-run": [400, 500, 600, 700], "dmc/walker-run": [300, 310, 320, 330]},
}
REPS = 2000
TOL = 0.02  # bootstrap endpoints, normalised units, at REPS resamples
TOL_POI = 0.03


def make_run(run_dir: Path, task: str, seed: int, overlays=(), binds=(), curve=((1000, 0.0),)):
    run_dir.mkdir(parents=True)
    (run_dir / "config.gin").write_text(f"make_env.task = '{task}'\nTrainer.seed = {seed}\nTrainer.num_threads = 1\n")
    gins = " ".join(f"--gin {g}" for g in (TASKS[task], *overlays))
    extra = " ".join(f"--bind '{b}'" for b in binds)
    (run_dir / "command.txt").write_text(f"python tools/run.py {gins} --seed {seed} --run-dir {run_dir} {extra} "
                                         f"--bind 'Trainer.num_threads = 1' --no-display\n")
    lines = [{"step": s, "critic/loss": 1.0} for s, _ in curve] + [{"step": s, "eval/return_mean": r} for s, r in curve]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in sorted(lines, key=lambda x: x["step"])))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for variant, by_task in FINAL.items():
        for task, finals in by_task.items():
            for seed, final in enumerate(finals):
                overlays = ["gin/ablations/reg_kl.gin"] if variant == "reg_kl" else []
                make_run(root / variant / task.replace("/", "-") / f"s{seed}", task, seed, overlays,
                         curve=((1000, final / 2), (2000, final)))
    return root


@pytest.fixture(scope="module")
def result(runs_dir):
    return compute(load_runs([runs_dir]), reps=REPS, seed=0)


def exact_bootstrap_ci(x):
    """The exact 95% percentile interval of the mean over all n^n equally likely resamples of x."""
    means = np.array([np.mean(c) for c in itertools.product(x, repeat=len(x))])
    return np.percentile(means, [2.5, 97.5])


def stratified_bootstrap(scores, fn, reps=20_000, seed=123):
    """A long, independent stratified bootstrap: runs resampled within each task (column)."""
    rng = np.random.default_rng(seed)
    n, tasks = scores.shape
    idx = rng.integers(0, n, size=(reps, n, tasks))
    samples = np.take_along_axis(np.broadcast_to(scores, (reps, n, tasks)), idx, axis=1)
    return np.percentile([fn(s) for s in samples], [2.5, 97.5])


def iqm(s):
    flat = np.sort(s.ravel())
    k = len(flat) // 4
    return flat[k:len(flat) - k].mean()  # the middle half (len divisible by 4 here)


def normalised(variant):
    return np.array([FINAL[variant][t] for t in TASKS]).T / 1000.0  # (runs, tasks)


def test_groups_by_task_and_variant_with_seeds_counted(result):
    assert result["variants"] == ["base", "reg_kl"] and result["base"] == "base"
    assert set(result["tasks"]) == set(TASKS)
    for task in TASKS:
        for variant in FINAL:
            assert result["tasks"][task][variant]["seeds"] == [0, 1, 2, 3]
            assert result["tasks"][task][variant]["steps"] == [2000, 2000]


def test_per_task_mean_auc_and_ci_match_hand_computed(result):
    for variant, by_task in FINAL.items():
        for task, finals in by_task.items():
            cell = result["tasks"][task][variant]
            assert cell["final"]["mean"] == pytest.approx(np.mean(finals))
            # Trapezoid over (1000, f/2), (2000, f), divided by the 1000-step span: 3f/4.
            assert cell["auc"]["mean"] == pytest.approx(0.75 * np.mean(finals))
            lo, hi = exact_bootstrap_ci(finals)
            assert cell["final"]["ci"] == pytest.approx([lo, hi], abs=TOL * 1000)
            assert cell["auc"]["ci"] == pytest.approx([0.75 * lo, 0.75 * hi], abs=TOL * 1000)


def test_aggregates_match_hand_computed(result):
    agg = result["normalised"]["variants"]
    assert result["normalised"]["tasks"]["dmc/walker-run"]["divisor"] == 1000
    # base: sorted scores .05 .1 .15 .2 .25 .3 .4 .95 -> IQM = mean(.15, .2, .25, .3) = .225; mean = 2.4 / 8 = .3
    assert agg["base"]["IQM"]["mean"] == pytest.approx(0.225)
    assert agg["base"]["mean"]["mean"] == pytest.approx(0.3)
    assert agg["base"]["optimality gap"]["mean"] == pytest.approx(0.7)
    for variant in FINAL:
        s = normalised(variant)
        assert agg[variant]["IQM"]["mean"] == pytest.approx(iqm(s))
        assert agg[variant]["mean"]["mean"] == pytest.approx(s.mean())
        assert agg[variant]["IQM"]["ci"] == pytest.approx(stratified_bootstrap(s, iqm), abs=TOL)
        assert agg[variant]["mean"]["ci"] == pytest.approx(stratified_bootstrap(s, np.mean), abs=TOL)
        assert agg[variant]["optimality gap"]["ci"] == pytest.approx(
            stratified_bootstrap(s, lambda x: 1 - np.minimum(x, 1).mean()), abs=TOL)


def test_probability_of_improvement_matches_hand_computed(result):
    # cheetah: reg_kl (400..700) beats base (100..400) in 15 of 16 pairs and ties one (a tie counts a half) ->
    # 15.5 / 16; walker: reg_kl (300..330) beats 50, 150 and 250, not 950 -> 12 / 16. Averaged over tasks: .859375.
    p = result["normalised"]["improvement"]["reg_kl"]
    assert p["mean"] == pytest.approx((15.5 / 16 + 12 / 16) / 2)
    x, y = normalised("reg_kl"), normalised("base")

    def poi(xs, ys):
        return np.mean([np.mean((xs[:, t, None] > ys[None, :, t]) + 0.5 * (xs[:, t, None] == ys[None, :, t]))
                        for t in range(xs.shape[1])])

    rng = np.random.default_rng(7)
    pick = lambda s: np.take_along_axis(s, rng.integers(0, 4, size=s.shape), axis=0)  # noqa: E731
    assert p["ci"] == pytest.approx(np.percentile([poi(pick(x), pick(y)) for _ in range(20_000)], [2.5, 97.5]),
                                    abs=TOL_POI)


def test_report_is_reproducible_at_a_fixed_seed(runs_dir):
    runs = load_runs([runs_dir])
    a, b = compute(runs, reps=500, seed=3), compute(runs, reps=500, seed=3)
    a.pop("_scores"), b.pop("_scores")
    assert a == b


def test_variants_from_bindings_and_the_base_option(tmp_path):
    make_run(tmp_path / "a", "dmc/cheetah-run", 0, curve=((1000, 10.0),))
    make_run(tmp_path / "b", "dmc/cheetah-run", 0, binds=["MLPVelocity.hidden = 32"], curve=((1000, 20.0),))
    runs = load_runs([tmp_path])
    assert sorted(r.variant for r in runs) == ["MLPVelocity.hidden=32", "base"]
    result = compute(runs, base="MLPVelocity.hidden=32", reps=200)
    assert result["normalised"]["improvement"]["base"]["mean"] == 0.0


@pytest.mark.slow
def test_runs_of_unequal_length_are_flagged_and_at_step_cuts_them_all_at_one_budget(tmp_path):
    # A sweep read while it runs: two finished seeds of base, one of base stopped at 2,000, reg_kl only at 1,000.
    make_run(tmp_path / "b0", "dmc/cheetah-run", 0, curve=((1000, 10.0), (2000, 30.0), (3000, 90.0)))
    make_run(tmp_path / "b1", "dmc/cheetah-run", 1, curve=((1000, 20.0), (2000, 40.0), (3000, 60.0)))
    make_run(tmp_path / "b2", "dmc/cheetah-run", 2, curve=((1000, 0.0), (2000, 50.0)))
    make_run(tmp_path / "k0", "dmc/cheetah-run", 0, ["gin/ablations/reg_kl.gin"], curve=((1000, 70.0),))
    make_run(tmp_path / "late", "dmc/cheetah-run", 3, ["gin/ablations/reg_kl.gin"], curve=((3000, 5.0),))
    proc = tool(tmp_path, "--out", tmp_path / "whole", "--reps", "200")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "whole" / "report.md").read_text()
    assert "| base | 3 | 2,000-3,000 | 66.7 [" in md  # finals 90, 60, 50: the mean mixes budgets...
    assert "end at different env steps (1,000 to 3,000)" in md and "`--at-step 1000`" in md  # ...and says so

    proc = tool(tmp_path, "--out", tmp_path / "cut", "--reps", "200", "--at-step", "2500")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("note: skipped") == 1 and "late: no evaluation by env step 2,500" in proc.stderr
    result = json.loads((tmp_path / "cut" / "report.json").read_text())
    base, kl = result["tasks"]["dmc/cheetah-run"]["base"], result["tasks"]["dmc/cheetah-run"]["reg_kl"]
    assert base["steps"] == [2000, 2000] and base["final"]["mean"] == pytest.approx((30 + 40 + 50) / 3)
    assert base["auc"]["mean"] == pytest.approx((20 + 30 + 25) / 3)  # each curve's trapezoid over 1,000-2,000
    assert kl["seeds"] == [0] and kl["final"]["mean"] == 70.0 and result["at_step"] == 2500
    md = (tmp_path / "cut" / "report.md").read_text()
    assert "up to env step 2,500 (`--at-step`)" in md and "end at different env steps (1,000 to 2,000)" in md

    proc = tool(tmp_path, "--at-step", "999")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: no run in ")
    assert "by env step 999" in proc.stderr and "fix:" in proc.stderr


def test_runs_from_other_code_or_package_versions_are_named(tmp_path):
    def stamp(run_dir, *entries):
        for commit, dirty, torch_version in entries:
            provenance.append(run_dir, {"commit": commit, "dirty": dirty,
                                        "packages": {"torch": torch_version, "mujoco": "3.17.0"}})

    for seed in range(4):
        make_run(tmp_path / f"b{seed}", "dmc/cheetah-run", seed, curve=((1000, 10.0),))
    stamp(tmp_path / "b0", ("a" * 40, False, "2.13.0"))
    stamp(tmp_path / "b1", ("a" * 40, False, "2.13.0"), ("b" * 40, True, "2.13.0"))  # resumed on edited code
    stamp(tmp_path / "b2", (None, None, "2.12.1"))  # b3: no provenance (an older run)
    proc = tool(tmp_path, "--out", tmp_path / "r", "--reps", "100")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r" / "report.json").read_text())
    assert result["provenance"] == {
        "runs_without": 1, "code": {"aaaaaaa": 1, "aaaaaaa -> bbbbbbb+dirty": 1, "not a git checkout": 1},
        "torch": {"2.13.0": 2, "2.12.1": 1}, "mujoco": {"3.17.0": 3}}
    md = (tmp_path / "r" / "report.md").read_text()
    assert ("The runs come from 3 code versions: aaaaaaa (1 run), aaaaaaa -> bbbbbbb+dirty (1 run), not a git "
            "checkout (1 run)") in md
    assert "2 torch versions: 2.13.0 (2 runs), 2.12.1 (1 run)" in md and "mujoco versions" not in md
    assert "1 of 4 runs have no provenance.jsonl" in md


def test_normalisers_cover_dmc_and_humanoidbench_targets():
    assert normaliser("dmc/humanoid-run")[0] == 1000
    assert normaliser("humanoidbench/h1-walk")[0] == 700 and normaliser("humanoidbench/h1hand-reach")[0] == 12000
    assert normaliser("humanoidbench/h1-sit_hard")[0] == 750
    assert normaliser("gym/Humanoid-v5") is None


def tool(*args):
    return subprocess.run([sys.executable, "tools/report.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_tool_writes_report_md_json_and_figures(runs_dir, tmp_path):
    out = tmp_path / "report"
    proc = tool(runs_dir, "--out", out, "--reps", "300")
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "### dmc/cheetah-run" in md and "| reg_kl | 4 | 2,000 | 550.0 [" in md and "IQM" in md
    assert "Probability of improvement over `base`" in md
    for png in ("curves_dmc-cheetah-run.png", "curves_dmc-walker-run.png", "aggregate.png", "profiles.png",
                "improvement.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in md
    assert json.loads((out / "report.json").read_text())["runs"] == 16


@pytest.mark.parametrize("case", ["empty", "absent"])
def test_bad_input_is_one_line(tmp_path, case):
    target = tmp_path / ("absent" if case == "absent" else "empty")
    if case == "empty":
        target.mkdir()
    proc = tool(target)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fix:" in lines[0]
    assert ("no run folders" if case == "empty" else "is not a folder") in lines[0]


@pytest.mark.parametrize("case", ["run folder", "--out", "--out below", "--download"])
def test_a_file_where_a_folder_belongs_is_one_line_and_writes_nothing(tmp_path, case):
    run_dir, taken = tmp_path / "runs" / "s0", tmp_path / "taken"
    make_run(run_dir, "dmc/cheetah-run", 0, curve=((1000, 5.0),))
    taken.write_text("x\n")
    before = sorted(tmp_path.rglob("*"))
    args = {"run folder": [taken], "--out": [run_dir, "--out", taken], "--out below": [run_dir, "--out", taken / "r"],
            "--download": [(tmp_path / "runs").as_uri(), "--download", taken]}[case]
    proc = tool(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and " is a file" in lines[0] and "; fix: " in lines[0], proc.stderr
    assert lines[0].startswith("error: " + ("'" if case == "run folder" else f"{case.split()[0]} '"))
    assert sorted(tmp_path.rglob("*")) == before and taken.read_text() == "x\n"


def test_modes_covered_is_reported_with_its_interval_where_the_task_reports_modes(tmp_path, monkeypatch):
    # Toy runs log eval/modes_covered beside the return: the report gives the last evaluation's count per variant,
    # with the same bootstrap as the return (4 seeds: the exact percentile interval of their mean).
    monkeypatch.setitem(TASKS, "toy/ring-bandit", "gin/tasks/toy/ring_bandit.gin")
    modes = [1.0, 2.0, 2.0, 5.0]
    for seed, m in enumerate(modes):
        run = tmp_path / "toy" / f"s{seed}"
        make_run(run, "toy/ring-bandit", seed, curve=((500, 0.2), (1000, 0.5)))
        with open(run / "metrics.jsonl", "a") as f:  # modes at both evaluations; the last counts
            f.write(json.dumps({"step": 500, "eval/modes_covered": 8.0}) + "\n")
            f.write(json.dumps({"step": 1000, "eval/modes_covered": m}) + "\n")
    make_run(tmp_path / "dmc" / "s0", "dmc/cheetah-run", 0, curve=((1000, 3.0),))  # no modes: no column
    result = compute(load_runs([tmp_path]), reps=REPS, seed=0)
    est = result["tasks"]["toy/ring-bandit"]["base"]["modes"]
    low, high = exact_bootstrap_ci(modes)
    assert est["mean"] == pytest.approx(2.5) and np.allclose(est["ci"], [low, high], atol=0.15)
    assert "modes" not in result["tasks"]["dmc/cheetah-run"]["base"]
    from flowrl.report.markdown import render

    text = render({**result, "normalised": {**result["normalised"], "variants": {}}},
                  {t: "x.png" for t in result["tasks"]}, [tmp_path])
    assert "| final return | AUC | modes covered |" in text and "| 2.5 [" in text


def test_an_agent_given_with_agent_names_the_variant_and_replaces_the_agent_file_it_replaced(tmp_path):
    # A sweep's agent variant runs `--gin gin/agents/flowrl.gin ... --agent gin/agents/sac.gin`: its variant is sac,
    # not flowrl+sac; the plot's overlays list the agent that trained.
    from flowrl.report import curves

    for name, extra in (("base", ""), ("sac", " --agent gin/agents/sac.gin")):
        run = tmp_path / name
        make_run(run, "dmc/cheetah-run", 0)
        (run / "command.txt").write_text(f"python tools/run.py --gin gin/agents/flowrl.gin --gin gin/smoke.gin --gin "
                                         f"gin/tasks/dmc/cheetah_run.gin{extra} --seed 0 --run-dir {run}\n")
    runs = {r.path.name: r for r in load_runs([tmp_path])}
    assert runs["base"].items == ("flowrl", "smoke") and runs["sac"].items == ("smoke", "sac")
    assert curves.overlays(tmp_path / "sac") == ["gin/smoke.gin", "gin/tasks/dmc/cheetah_run.gin", "gin/agents/sac.gin"]
