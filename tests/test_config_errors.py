"""Config mistakes on the command line, typed as a user types them: one `error:` line naming what exists, exit 2,
and no run directory left behind."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewstep.errors import FewstepError

ROOT = Path(__file__).resolve().parents[1]


def run_py(args, root: Path, env_extra=None):
    """`python run.py ARGS` with its outputs under `root` (FEWSTEP_ROOT, as a user may set it)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"FEWSTEP_ROOT": str(root), "PYTHONWARNINGS": "ignore", **(env_extra or {})})
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def run_dirs(root: Path) -> list[Path]:
    return [p for p in (root / "outputs").glob("*runs/*/*") if p.is_dir()]


CASES = [
    (["solver=ipdnm"], "error: solver=ipdnm: there is no solver option 'ipdnm' (did you mean ipndm?); the options, "
     "closest first: ipndm, ipndm_v, "),
    (["solver=foo"], "error: solver=foo: there is no solver option 'foo'; the options: deis, dpm, dpmpp, "),
    (["schedule=foo"], "error: schedule=foo: there is no schedule option 'foo'; the options: ays, beta, discrete, "),
    (["dataset=foo"], "error: dataset=foo: there is no dataset option 'foo'; the options: cifar10, digits, "),
    (["model=unet_mnist"], "error: model=unet_mnist: there is no model option 'unet_mnist' (did you mean "
     "unet_mnist5k?)"),
    (["trainer=foo"], "error: trainer=foo: there is no trainer option 'foo'; the options: cpu, ddp, gpu"),
    (["logger=foo"], "error: logger=foo: there is no logger option 'foo'; the options: csv, many, none, "),
    (["task=foo"], "error: task=foo: there is no task option 'foo'; the options: analyze, sample, search, train, "),
    (["eval/features=lenett"], "error: eval/features=lenett: there is no eval/features option 'lenett' (did you mean "
     "lenet?)"),
    (["nfee=5"], "error: nfee=5: no key 'nfee' in the config (did you mean nfe?); its keys, closest first: nfe, "),
    (["schedule.coef=1.2"], "error: schedule.coef=1.2: no key 'coef' in schedule (did you mean coeff?); its keys, "
     "closest first: coeff, "),
    (["solver=dpm", "solver.rr=0.5"], "error: solver.rr=0.5: no key 'rr' in solver (did you mean r?); its keys, "
     "closest first: r, "),
    (["+nfee=5"], "error: +nfee=5: nothing reads a key 'nfee' in the config (did you mean nfe?)"),
    (["+eval.bootstrapp=5"], "error: +eval.bootstrapp=5: nothing reads a key 'bootstrapp' in eval (did you mean "
     "bootstrap?)"),
    (["+trainer.devicess=2"], "error: +trainer.devicess=2: lightning.pytorch.Trainer (trainer) takes no 'devicess' "
     "(did you mean devices?)"),
    (["nfe=["], "error: cannot read the overrides: no viable alternative at input '['"),
    (["-m", "solver=ipndm,ipdnm"], "error: solver=ipndm,ipdnm: there is no solver option 'ipdnm'"),
    (["nfe=-1"], "error: nfe must be a positive integer, got -1"),
]  # fmt: skip


@pytest.mark.parametrize("args, line", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_config_mistake_is_one_line_naming_what_exists(tmp_path, args, line):
    done = run_py(args, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.startswith(line), done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert run_dirs(tmp_path) == [], "a rejected config left a run directory"


def test_a_user_who_asks_for_hydras_full_error_gets_it(tmp_path):
    done = run_py(["nfee=5"], tmp_path, {"HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 1 and "Traceback" in done.stderr and "Key 'nfee' is not in struct" in done.stderr


def test_a_rejected_config_keeps_a_run_directory_the_user_made(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    done = run_py(["nfe=-1", f"hydra.run.dir={mine}"], tmp_path)
    assert done.returncode == 2 and mine.is_dir()


@pytest.mark.parametrize(
    "added",
    ["+trainer.max_epochs=1", "+model.denoiser.chunk_size=64", "+dataset.limit=10", "+schedule.base_options.x=1",
     "+solver.max_orderr=2"],
)  # fmt: skip
def test_added_keys_that_something_reads_are_accepted(make_cfg, added):
    """Keys a constructor takes, options their consumer checks (solver, schedule: a misspelt one is refused by
    the plan, as before)."""
    from hydra.core.hydra_config import HydraConfig

    from fewstep.app.config.overrides import check_added_keys

    cfg = make_cfg(added) if "chunk_size" not in added else make_cfg("model.denoiser.chunk_size=64")
    check_added_keys(cfg, [added], HydraConfig.get().runtime.choices.keys())


def test_an_added_key_nothing_reads_is_refused_with_the_keys_that_exist(make_cfg):
    from hydra.core.hydra_config import HydraConfig

    from fewstep.app.config.overrides import check_added_keys

    cfg = make_cfg("+paths.cachedir=/x", "+foo.bar=1")
    choices = HydraConfig.get().runtime.choices.keys()
    with pytest.raises(FewstepError, match=r"^\+paths.cachedir=/x: nothing reads a key 'cachedir' in paths \(did "
                                           r"you mean cache_dir\?\)"):  # fmt: skip
        check_added_keys(cfg, ["+paths.cachedir=/x"], choices)
    with pytest.raises(FewstepError, match=r"^\+foo.bar=1: nothing reads a key 'foo' in the config; its keys: "):
        check_added_keys(cfg, ["+foo.bar=1"], choices)


def file_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    empty, garbage = tmp_path / "empty.npz", tmp_path / "garbage.npz"
    empty.write_bytes(b"")
    garbage.write_bytes(bytes(range(256)) * 4)
    checkpoint = tmp_path / "empty.pt"
    checkpoint.write_bytes(b"")
    return [
        (["experiment=quick", f"eval.reference_stats={empty}"],
         f"error: eval.reference_stats {empty} cannot be read: it is empty (0 bytes); give the npz with mu and sigma"),
        (["experiment=quick", f"eval.reference_stats={garbage}"],
         f"error: eval.reference_stats {garbage} cannot be read: it is not an npz archive (an npz is a zip of .npy "
         "arrays; this file starts with b'\\x00\\x01\\x02\\x03')"),
        (["model=unet", f"model.denoiser.path={checkpoint}"],
         f"error: checkpoint {checkpoint} is empty (0 bytes): its download or its writing was cut short"),
        (["schedule.teacher_order=9"],
         "error: schedule.teacher=ipndm schedule.teacher_order=9: ipndm max_order must be 1, 2, 3 or 4, got 9"),
        (["trainer=ddp", "trainer.devices=1000"], "error: trainer.devices=1000 would start 1000 processes"),
        *([(["trainer=gpu"], "error: trainer.accelerator=gpu needs a CUDA GPU")] if not torch.cuda.is_available()
          else []),
    ]  # fmt: skip


def test_damaged_files_and_late_checks_are_one_line_from_run_py(tmp_path):
    """As a user types them; none starts Lightning's processes or leaves a run directory."""
    for args, line in file_cases(tmp_path):
        done = run_py(args, tmp_path / "root")
        assert done.returncode == 2, done.stderr[-3000:]
        assert done.stderr.startswith(line) and done.stderr.count("\n") == 1, done.stderr[-3000:]
        assert run_dirs(tmp_path / "root") == []
