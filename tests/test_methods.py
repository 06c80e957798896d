"""The method -> clusterings -> heads mapping of paper §3."""

import numpy as np
import pytest

from xdc_core.methods import feature_sets, targets


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.normal(size=(10, 6)) * 3, rng.normal(size=(10, 4)) * 0.1


def test_single_modality_sets_for_sdc_mdc_xdc(feats):
    v, a = feats
    for method in ("sdc", "mdc", "xdc"):
        sets = feature_sets(method, v, a)
        assert list(sets) == ["video", "audio"] and sets["video"] is v and sets["audio"] is a


def test_cdc_concatenates_separately_normalised_features(feats):
    v, a = feats
    joint = feature_sets("cdc", v, a)["joint"]
    assert joint.shape == (10, 10)
    assert np.allclose(np.linalg.norm(joint[:, :6], axis=1), 1) and np.allclose(np.linalg.norm(joint[:, 6:], axis=1), 1)


def test_heads_per_method():
    cv, ca, cj = np.array([0, 1]), np.array([1, 0]), np.array([2, 2])
    c = {"video": cv, "audio": ca}
    sdc, mdc, xdc = targets("sdc", c), targets("mdc", c), targets("xdc", c)
    assert sdc["video"] == [cv] and sdc["audio"] == [ca]
    assert mdc["video"] == [cv, ca] and mdc["audio"] == [ca, cv]
    assert xdc["video"] == [ca] and xdc["audio"] == [cv]  # each encoder learns the other's clusters
    cdc = targets("cdc", {"joint": cj})
    assert cdc["video"] == [cj] and cdc["audio"] == [cj]


def test_bad_method_and_missing_clustering():
    with pytest.raises(ValueError, match="unknown method 'dc'"):
        targets("dc", {})
    with pytest.raises(ValueError, match="cdc needs clusterings of"):
        targets("cdc", {"video": np.zeros(2)})
