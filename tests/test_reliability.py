"""Nothing silently wrong: poisoned caches are recomputed to the clean result, bad input is one line before any
expensive work, non-finite results are never cached, SIGTERM stops a run that then resumes to identical metrics."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from fewstep import FewstepError, run
from fewstep.app.shards import ShardStore
from fewstep.errors import NonFiniteError, RunInterrupted
from fewstep.utils.cache import load_json, load_torch, seal

from .conftest import QUICK, ROOT, compose_config, run_cli

# ---------------------------------------------------------------------------------------------------------------
# Bad input: one clear error naming the key, before the data or the model load

BAD_INPUTS = [
    (["num_samples=abc"], "num_samples must be an integer, got 'abc'"),
    (["num_samples=2.5"], "num_samples must be an integer, got 2.5"),
    (["batch_size=abc"], "batch_size must be an integer"),
    (["denoise_to_zero=maybe"], "denoise_to_zero must be true or false"),
    (["denoise_to_zero=no"], "denoise_to_zero must be true or false"),
    (["seed=-1"], "seed must be between 0 and"),
    (["seed=9223372036854775800"], "so that the 24 seeds stay below 2**63"),
    (["seed=2**63"], "seed must be an integer"),
    (["nfe=1000000"], "above the limit of 120 (10 x eval.reference.num_steps=12)"),
    (["nfe=5.5"], "nfe must be a positive integer"),
    (["solver.max_order=9"], "max_order must be 1, 2, 3 or 4, got 9"),
    (["solver.max_order=two"], "solver.max_order must be an integer"),
    (["solver=dpmpp", "solver.lower_order_final=maybe"], "solver.lower_order_final must be true or false"),
    (["schedule=explicit", "schedule.sigmas=[80,abc,0.002]", "nfe=2"], "explicit sigmas must be numbers"),
    (["schedule.rho=seven"], "schedule.rho must be a finite number"),
    (["schedule=gits", "schedule.afs_insert=yes"], "schedule.afs_insert must be true or false"),
    (["schedule=gits", "schedule.num_warmup=1.5"], "schedule.num_warmup must be an integer"),
    (["model=unet"], "model.denoiser.path must be set"),
    (["model=edm_pickle"], "model.denoiser.path must be set"),
    (
        ["model=edm_pickle", "model.denoiser.path=x.pkl", "model.denoiser.allow_pickle=maybe"],
        "model.denoiser.allow_pickle must be true or false",
    ),  # fmt: skip
    (["eval.save_npz=1"], "eval.save_npz must be true or false"),
    (["task=analyze", "task.num_steps=ten"], "task.num_steps must be an integer"),
    (["task=train", "task.resume=maybe"], "task.resume must be true or false"),
    (["schedule=gits", "schedule.teacher_order=9"],
     "schedule.teacher=ipndm schedule.teacher_order=9: ipndm max_order must be 1, 2, 3 or 4, got 9"),
    (["schedule=oss", "schedule.teacher_order=0"], "schedule.teacher_order=0: ipndm max_order must be"),
    (["trainer=ddp", "trainer.devices=1000"], "trainer.devices=1000 would start 1000 processes, and this machine has"),
    (["task=train", "trainer.devices=1000"], "trainer.devices=1000 would start 1000 processes"),
    (["trainer.devices=0"], "trainer.devices must be a positive integer (or -1, auto), got 0"),
    *([(["trainer=gpu"], "trainer.accelerator=gpu needs a CUDA GPU")] if not torch.cuda.is_available() else []),
]  # fmt: skip


@pytest.mark.parametrize("overrides, message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_one_error_before_anything_loads(make_cfg, monkeypatch, overrides, message):
    def no_loading(*args, **kwargs):
        raise AssertionError("the data or the model was loaded before the config was checked")

    monkeypatch.setattr("fewstep.app.config.plan.build_dataset", no_loading)
    cfg = make_cfg(*QUICK, *overrides)
    with pytest.raises(FewstepError) as err:
        run(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unwritable_cache_dir_is_refused_up_front(make_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = make_cfg(*QUICK)
    cfg.paths.cache_dir = str(blocker / "cache")
    with pytest.raises(FewstepError, match="paths.cache_dir=.* cannot be written"):
        run(cfg)


def test_command_line_errors_are_one_line(tmp_path):
    """What run.py prints: one `error:` line, no traceback, exit 2 (Hydra's own dir handling included)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    run_dir, cache_dir = f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"
    cases = [
        (["num_samples=abc", run_dir, cache_dir], "error: num_samples must be an integer, got 'abc'"),
        (["model=edm_pickle", run_dir, cache_dir], "error: model.denoiser.path must be set"),
        ([f"paths.cache_dir={blocker}/cache", run_dir], f"error: paths.cache_dir={blocker}/cache cannot be written"),
        (
            [f"hydra.run.dir={blocker}/run"],
            f"error: hydra.run.dir={blocker}/run cannot be written (Not a directory); set hydra.run.dir",
        ),
    ]
    for args, line in cases:
        done = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2 and done.stderr.startswith(line), done.stderr[-2000:]
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize(
    "raised, status, line",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/x/shard.pt"), 1,
         "error: no space left on the device writing /x/shard.pt; free space, or point paths.cache_dir"),
        (PermissionError(errno.EACCES, "Permission denied", "/ro/cache"), 1,
         "error: cannot write /ro/cache (Permission denied); set paths.cache_dir=..."),
        (RunInterrupted(signal.SIGTERM), 143, "stopped by SIGTERM: finished batches are kept; re-run the same command"),
        (NonFiniteError("GITS warm-up: non-finite costs"), 2, "error: GITS warm-up: non-finite costs"),
    ],
)  # fmt: skip
def test_run_py_reports_each_failure_in_one_line(monkeypatch, capsys, restore_signals, raised, status, line):
    from fewstep.app.command import run_reporting_errors

    def failing(cfg):
        raise raised

    monkeypatch.setattr("fewstep.app.tasks.run", failing)
    with pytest.raises(SystemExit) as stop:
        run_reporting_errors(None)
    err = capsys.readouterr().err
    assert stop.value.code == status and err.startswith(line) and err.count("\n") == 1


def test_a_full_disk_names_the_file_it_was_writing(tmp_path, monkeypatch):
    from fewstep.app.command import os_error_line
    from fewstep.utils import storage

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full)
    target = tmp_path / "cache" / "samples" / "seeds_000000000_000000003_4.pt"
    with pytest.raises(OSError) as err:
        storage.atomic_torch_save(target, {"x": torch.zeros(2)})
    assert os_error_line(err.value).startswith(f"no space left on the device writing {target}; free space")
    assert not list(target.parent.iterdir()), "the temporary file was left behind"


def test_device_count_is_bounded_by_the_machine_unless_a_launcher_made_the_ranks(monkeypatch):
    from omegaconf import OmegaConf

    from fewstep.app.config import checks

    monkeypatch.setattr(checks, "available_cores", lambda: 4)
    monkeypatch.setattr(checks.torch.cuda, "is_available", lambda: False)
    trainer = OmegaConf.create({"accelerator": "cpu", "devices": 5})
    with pytest.raises(FewstepError, match="trainer.devices=5 would start 5 processes, and this machine has 4 CPU "
                                           "cores; use trainer.devices=4 or fewer"):  # fmt: skip
        checks.check_trainer(trainer, environ={})
    checks.check_trainer(trainer, environ={"LOCAL_WORLD_SIZE": "5"})  # torchrun started them already
    checks.check_trainer(trainer, environ={"SLURM_NTASKS": "5"})
    for fine in (4, -1, "auto", "4", [0, 1]):
        checks.check_trainer(OmegaConf.create({"accelerator": "cpu", "devices": fine}), environ={})
    with pytest.raises(FewstepError, match="needs a CUDA GPU"):
        checks.check_trainer(OmegaConf.create({"accelerator": "cuda", "devices": 1}), environ={})


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import os as _os
    import time as _time

    from fewstep.utils import storage

    host = storage._host()
    dead = tmp_path / f".a.pt.w999999999@{host}.x1.tmp"
    live = tmp_path / f".a.pt.w{_os.getpid()}@{host}.x2.tmp"
    foreign = tmp_path / ".a.pt.w1@another-host.x3.tmp"
    old = tmp_path / ".b.pt.x4.tmp"
    for path in (dead, live, foreign, old):
        path.write_bytes(b"partial")
    _os.utime(old, (_time.time() - 2 * storage.FOREIGN_TMP_SECONDS,) * 2)
    assert sorted(storage.remove_stale_temporaries(tmp_path)) == sorted([dead, old])
    assert live.exists() and foreign.exists()


def test_a_stopped_training_run_says_how_to_continue_it():
    from omegaconf import OmegaConf

    from fewstep.app.command import resume_hint

    train = OmegaConf.create({"task": {"name": "train"}, "paths": {"output_dir": "/runs/train_digits"}})
    assert resume_hint(train).endswith("task.resume=true hydra.run.dir=/runs/train_digits")
    assert resume_hint(OmegaConf.create({"task": {"name": "sample"}})).endswith("re-run the same command to resume")
    assert resume_hint(None).endswith("re-run the same command to resume")


class BrokenLogger:
    def __init__(self, **kwargs):
        raise ConnectionError("the server is down\nmore lines")


def test_a_logger_failing_after_the_results_is_a_warning(make_cfg, tmp_path, caplog):
    metrics = run(make_cfg(*QUICK, "+logger.broken._target_=tests.test_reliability.BrokenLogger"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["fid"] == metrics["fid"]
    assert "the broken logger failed (ConnectionError: the server is down)" in caplog.text


def test_wandb_goes_offline_without_key_or_network(monkeypatch, tmp_path):
    from fewstep.app.loggers import wandb_offline_reason

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert "no API key" in wandb_offline_reason({})
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    started = time.perf_counter()
    assert "127.0.0.1:9 cannot be reached" in wandb_offline_reason({})
    assert time.perf_counter() - started < 5
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline_reason({}) is None


def test_torchscript_features_need_the_code_opt_in(tmp_path):
    from fewstep.metrics.inception import InceptionFeatures

    path = tmp_path / "inception.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(FewstepError, match="runs code when loaded .* eval.features.allow_code=true"):
        InceptionFeatures(path)
    assert InceptionFeatures(path, allow_code=True).identity.startswith("inception:")


def test_statistics_npz_without_mu_names_what_it_has(tmp_path):
    import numpy as np

    from fewstep.metrics.evaluation import load_statistics

    np.savez(tmp_path / "stats.npz", mean=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(FewstepError) as err:
        load_statistics(tmp_path / "stats.npz")
    assert str(err.value).endswith("has arrays ['mean', 'sigma'], but not mu (a statistics npz holds mu and sigma)")


def test_hints_name_options_that_exist():
    """Every `group=option` that fewstep's messages (string literals), configs or README suggest is a config
    that exists."""
    import io
    import re
    import tokenize

    groups = {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()}
    pattern = re.compile(r"\b(" + "|".join(sorted(groups)) + r")=([a-z][a-z0-9_]*)\b")
    texts = {}
    for path in (ROOT / "src" / "fewstep").rglob("*.py"):
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        texts[path] = " ".join(t.string for t in tokens if t.type in (tokenize.STRING, tokenize.COMMENT)
                               or t.type == getattr(tokenize, "FSTRING_MIDDLE", -1))  # fmt: skip
    for path in [*(ROOT / "conf").rglob("*.yaml"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        # a block that shows an `error:` shows a deliberate mistake (docs/reliability.md)
        texts[path] = re.sub(r"```text\n(?:(?!```).)*?error:.*?```", "", path.read_text(), flags=re.S)
    missing = set()
    for path, text in texts.items():
        for group, option in pattern.findall(text):
            if not (ROOT / "conf" / group / f"{option}.yaml").is_file() and option != "null":
                missing.add(f"{group}={option} ({path.relative_to(ROOT)})")
    assert not missing, sorted(missing)
    assert texts[ROOT / "src" / "fewstep" / "models" / "unet.py"].count("model=ddpm_cifar10")  # the check sees hints


# ---------------------------------------------------------------------------------------------------------------
# Poisoned caches: each is one warning, recomputed to the clean result

GITS_SMALL = [*QUICK, "schedule=gits", "schedule.num_warmup=16", "schedule.grid_size=21", "eval.baseline=null"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One clean GITS run: its metrics and its cache folder, copied by each case."""
    root = tmp_path_factory.mktemp("clean")
    metrics = run(compose_config(GITS_SMALL, root))
    return metrics, root / "cache"


def _only(folder, pattern):
    (path,) = sorted(folder.glob(pattern))
    return path


def _reseal(path, payload):
    """Write a payload with a valid checksum: only the sanity checks can reject it."""
    if path.suffix == ".json":
        path.write_text(json.dumps(seal(payload)))
    else:
        torch.save(seal(payload), path)


def poison_schedule_order(cache):
    path = _only(cache, "gits/schedules/*.json")
    record = json.loads(path.read_text())
    record["sigmas"][1], record["sigmas"][2] = record["sigmas"][2], record["sigmas"][1]
    path.write_text(json.dumps(record))  # the checksum no longer matches


def poison_schedule_empty(cache):
    _only(cache, "gits/schedules/*.json").write_text("{}")


def poison_schedule_above_sigma_max(cache):
    path = _only(cache, "gits/schedules/*.json")
    record = load_json(path)
    del record["checksum"]
    record["sigmas"][0] = 200.0
    _reseal(path, record)


def _cost_only(cache):
    """Remove the schedule, so the search must read the cost matrix."""
    _only(cache, "gits/schedules/*.json").unlink()
    return _only(cache, "gits/costs/*.pt")


def poison_cost_nan(cache):
    path = _cost_only(cache)
    entry = load_torch(path)
    del entry["checksum"]
    entry["cost"][0, 5] = float("nan")
    _reseal(path, entry)


def poison_cost_without_keys(cache):
    torch.save({}, _cost_only(cache))


def poison_cost_3x3(cache):
    path = _cost_only(cache)
    entry = load_torch(path)
    del entry["checksum"]
    entry["cost"] = torch.rand(3, 3, dtype=torch.float64)
    _reseal(path, entry)


def poison_reference_shape(cache):
    path = sorted(cache.glob("reference/*/*.pt"))[0]
    shard = load_torch(path)
    _reseal(path, {"seeds": shard["seeds"], "samples": torch.zeros(len(shard["seeds"]), 1, 4, 4)})


def poison_reference_truncated(cache):
    path = sorted(cache.glob("reference/*/*.pt"))[-1]
    path.write_bytes(path.read_bytes()[:300])


def poison_samples_altered(cache):
    path = sorted(cache.glob("samples/*/*.pt"))[0]
    shard = load_torch(path)
    shard["samples"][0] += 0.5  # the checksum no longer matches
    torch.save(shard, path)


def poison_samples_nan(cache):
    path = sorted(cache.glob("samples/*/*.pt"))[0]
    shard = load_torch(path)
    del shard["checksum"]
    shard["samples"][1, 0, 0, 0] = float("nan")
    _reseal(path, shard)


def poison_statistics_shifted(cache):
    import numpy as np

    path = sorted(cache.glob("refstats/*.npz"))[0]
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["mu"] = arrays["mu"] + 1.0
    np.savez(path, **arrays)


POISONS = [
    (poison_schedule_order, "gits schedule cache", "checksum mismatch"),
    (poison_schedule_empty, "gits schedule cache", "no checksum"),
    (poison_schedule_above_sigma_max, "gits schedule cache", "sigmas outside"),
    (poison_cost_nan, "GITS cost cache", "non-finite costs"),
    (poison_cost_without_keys, "GITS cost cache", "no checksum"),
    (poison_cost_3x3, "GITS cost cache", "cost matrix is not 21x21"),
    (poison_reference_shape, "sample shard", "samples of shape (1, 4, 4), expected (1, 8, 8)"),
    (poison_reference_truncated, "sample shard", "unreadable"),
    (poison_samples_altered, "sample shard", "checksum mismatch"),
    (poison_samples_nan, "sample shard", "non-finite samples"),
    (poison_statistics_shifted, "dataset statistics", "checksum mismatch"),
]


@pytest.mark.parametrize("poison, what, problem", POISONS, ids=[p.__name__ for p, _, _ in POISONS])
def test_a_poisoned_cache_entry_is_recomputed(clean, tmp_path, caplog, poison, what, problem):
    metrics, cache = clean
    shutil.copytree(cache, tmp_path / "cache", symlinks=True)
    poison(tmp_path / "cache")
    again = run(compose_config(GITS_SMALL, tmp_path))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "damaged" in r.getMessage()]
    assert len(warnings) == 1 and what in warnings[0] and problem in warnings[0], warnings
    for key in ("fid", "fd", "truncation_error", "kid", "fid_vs_reference"):
        assert again[key] == metrics[key], key
    assert again["sigmas"] == metrics["sigmas"]
    caplog.clear()
    run(compose_config(GITS_SMALL, tmp_path))  # the recomputed entry is whole again: reused without a warning
    assert not [r for r in caplog.records if "damaged" in r.getMessage()]


# ---------------------------------------------------------------------------------------------------------------
# Non-finite results: one error naming the stage and the seeds; nothing cached


class NaNBelow(torch.nn.Module):
    """The KDE, except that it returns NaN below a noise level (a model broken at low sigma)."""

    rows_independent = True

    def __init__(self, inner, below: float):
        super().__init__()
        self.inner, self.below = inner, below

    def forward(self, x, sigma):
        out = self.inner(x, sigma)
        return out + float("nan") if float(torch.as_tensor(sigma).max()) < self.below else out


@pytest.fixture
def nan_model(monkeypatch):
    from fewstep.app.config import plan

    build = plan.build_denoiser
    monkeypatch.setattr(plan, "build_denoiser", lambda cfg, dataset: NaNBelow(build(cfg, dataset), 1.0))


@pytest.mark.parametrize("task", ["sample", "search"])
def test_a_nan_model_under_gits_fails_and_caches_nothing(make_cfg, tmp_path, nan_model, task):
    with pytest.raises(NonFiniteError, match=r"GITS warm-up: non-finite costs for seeds 1000000\.\.1000007"):
        run(make_cfg(*GITS_SMALL, f"task={task}"))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "gits" in p.parts]


def test_non_finite_samples_fail_and_write_no_shard(make_cfg, tmp_path, nan_model):
    with pytest.raises(NonFiniteError, match=r"sampling: ipndm on polynomial, 24 samples: non-finite samples for 8 "
                       r"of seeds 0\.\.7"):  # fmt: skip
        run(make_cfg(*QUICK))
    assert not list((tmp_path / "cache").glob("samples/*/*.pt"))


def test_a_non_finite_metric_is_an_error_and_writes_nothing(make_cfg, tmp_path, monkeypatch):
    import fewstep.metrics.evaluation as evaluation

    score = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: {**(score(*a, **k) or {}), "fid": float("nan")})
    with pytest.raises(NonFiniteError, match="evaluation: non-finite fid for seeds 0..23"):
        run(make_cfg(*QUICK))
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# Determinism and timing that survive batching and resuming


def test_network_samples_do_not_depend_on_the_batch_size(tmp_path):
    """The U-Net on the CPU is evaluated in fixed 16-row blocks: bit-identical samples for batch 7 and 32."""
    samples = {}
    for batch in (7, 32):
        cfg = compose_config([*QUICK, "model=unet_mnist5k", "dataset=mnist5k", "num_samples=32", "nfe=3",
                              f"batch_size={batch}", "eval.reference.solver=null", "eval.baseline=null"],
                             tmp_path / str(batch))  # fmt: skip
        run(cfg)
        (store,) = (tmp_path / str(batch) / "run" / "samples").iterdir()
        samples[batch] = ShardStore(store).load(list(range(32)))
    assert torch.equal(samples[7], samples[32])


def test_sampling_seconds_count_resumed_shards(make_cfg, tmp_path):
    """A resumed run reports the compute time of all its samples: the reused shards' and the recomputed ones'."""

    def shard_seconds():
        return {p.name: load_torch(p)["seconds"] for p in sorted((tmp_path / "cache").glob("samples/*/*.pt"))}

    first = run(make_cfg(*QUICK))
    before = shard_seconds()
    assert first["sampling_seconds"] == pytest.approx(sum(before.values()), rel=1e-9) and min(before.values()) > 0
    removed = sorted(before)[0]
    next((tmp_path / "cache").glob(f"samples/*/{removed}")).unlink()
    resumed = run(make_cfg(*QUICK))
    after = shard_seconds()
    assert {k: v for k, v in after.items() if k != removed} == {k: v for k, v in before.items() if k != removed}
    assert resumed["sampling_seconds"] == pytest.approx(sum(after.values()), rel=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# SIGTERM: stops within seconds, keeps what is written, and the same command resumes to identical metrics

SLOW = ["dataset=mnist5k", "schedule=polynomial", "solver=euler", "nfe=50", "num_samples=48", "batch_size=4",
        "eval.reference.num_steps=50", "eval.baseline=null", "eval.grid_size=16",
        "trainer.enable_progress_bar=false"]  # fmt: skip


def _stop_when(args, tmp_path, folder: str):
    """Start the command, send SIGTERM once a shard appears under cache/`folder`; return (status, stderr, seconds
    from the signal to the exit)."""
    cmd = [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={tmp_path / 'run'}",
           f"paths.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list((tmp_path / "cache").glob(f"{folder}/*/*.pt")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.time() - sent


def test_sigterm_stops_sampling_and_the_reference_and_the_same_command_resumes(tmp_path):
    clean = run_cli(SLOW, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-3000:]
    expected = json.loads((tmp_path / "clean" / "run" / "metrics.json").read_text())

    for folder in ("samples", "reference"):
        status, err, seconds = _stop_when(SLOW, tmp_path / "stopped", folder)
        assert status == 128 + signal.SIGTERM, err[-3000:]
        assert err.strip().splitlines()[-1] == (
            "stopped by SIGTERM: finished batches are kept; re-run the same command to resume"
        )
        assert "Traceback" not in err and seconds < 10
        done = len(list((tmp_path / "stopped" / "cache").glob(f"{folder}/*/*.pt")))
        assert 1 <= done < 12  # stopped part-way: 48 samples are 12 batches
    resumed = run_cli(SLOW, tmp_path / "stopped")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "stopped" / "run" / "metrics.json").read_text())
    for key in ("fid", "fd", "kid", "truncation_error", "fid_vs_reference"):
        assert metrics[key] == expected[key], key
    assert not list((tmp_path / "stopped").rglob("*.tmp"))  # no half-written file left by the stops


# ---------------------------------------------------------------------------------------------------------------
# kill -9 in the middle of a shard write: the next run resumes to identical metrics and removes the dead writer's
# temporary file

KILLED = ["dataset=digits", "schedule=polynomial", "solver=euler", "nfe=10", "num_samples=32", "batch_size=4",
          "eval.reference.num_steps=20", "eval.baseline=null", "eval.grid_size=16",
          "trainer.enable_progress_bar=false"]  # fmt: skip

KILL_ON_THIRD_SHARD = """
import os, runpy, signal, sys
rename = os.replace
shards = []
def replace(src, dst):
    if "/samples/" in str(dst) and str(dst).endswith(".pt"):
        shards.append(dst)
        if len(shards) == 3:  # written and synced, not yet renamed: the moment a kill -9 leaves a temporary
            os.kill(os.getpid(), signal.SIGKILL)
    return rename(src, dst)
os.replace = replace
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_kill_9_during_a_shard_write_then_the_same_command_resumes_and_leaves_no_tmp(tmp_path):
    def command(root, prefix=()):
        env = {**os.environ, "FEWSTEP_ROOT": str(root), "PYTHONWARNINGS": "ignore"}
        return subprocess.run([sys.executable, *prefix, str(ROOT / "run.py"), *KILLED], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    def metrics(root):
        (path,) = (root / "outputs" / "runs").glob("*/*/metrics.json")
        return json.loads(path.read_text())

    clean = command(tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed = command(tmp_path / "killed", ("-c", KILL_ON_THIRD_SHARD))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    cache = tmp_path / "killed" / "outputs" / "cache"
    assert len(list(cache.rglob("samples/*/.*.tmp"))) == 1 and len(list(cache.rglob("samples/*/*.pt"))) == 2
    resumed = command(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = metrics(tmp_path / "clean"), metrics(tmp_path / "killed")
    for key in ("fid", "fd", "kid", "truncation_error", "fid_vs_reference"):
        assert got[key] == expected[key], key
    assert not list((tmp_path / "killed").rglob("*.tmp")), "the dead writer's temporary file was left"
