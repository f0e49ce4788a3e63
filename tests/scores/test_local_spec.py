"""`make_local_model`: the names probes and analysis commands use for local models."""

import numpy as np
import pytest

import gaussjax as gj
from gaussjax.scores import LocalDeltaMixture, PatchMixture, PatchPosteriorMean, make_local_model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (6, 4, 5, 2)).astype(np.float32)


def test_names_build_the_models(images):
    ls, els = make_local_model("ls3", images), make_local_model("els5", images)
    assert type(ls) is PatchMixture and (ls.patch_size, ls.equivariant) == (3, False)
    assert type(els) is PatchMixture and (els.patch_size, els.equivariant) == (5, True)
    pspc = make_local_model("pspc4", images)
    assert type(pspc) is PatchPosteriorMean and (pspc.patch_size, pspc.stride) == (4, 2)
    gaussian = gj.fit_gaussian(images.reshape(6, -1))
    locality = make_local_model("locality", images, gaussian=gaussian)
    assert type(locality) is LocalDeltaMixture
    x = images.reshape(6, -1)[:2] + 0.1
    np.testing.assert_allclose(locality.denoise(x, 0.7), LocalDeltaMixture(images, gaussian).denoise(x, 0.7))


@pytest.mark.parametrize("spec, message", [("ls", "unknown"), ("els4x", "unknown"), ("gmm5", "unknown"),
                                           ("LS3", "unknown"), ("", "unknown"), ("els4", "must be odd"),
                                           ("pspc0", ">= 1"), ("ls3\n", "unknown"), ("ls\u0663", "unknown"),
                                           ("els\uff15", "unknown"), ("locality\n", "unknown")])
def test_bad_names_are_refused(images, spec, message):
    with pytest.raises(ValueError, match=message):
        make_local_model(spec, images)
