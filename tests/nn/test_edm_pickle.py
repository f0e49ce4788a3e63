"""`load_edm_pickle`: NVlabs/edm snapshots of every network kind, against EDM's own outputs, and its errors.

The fixture `edm_pickle_zoo.pkl.gz` is one snapshot pickled by EDM's own code
(`data/make_edm_pickles.py`) holding a tiny network of each kind gaussjax imports:
`ema` EDMPrecond(SongUNet DDPM++, class and augment labels, attention), `vp`
VPPrecond(DDPM++), `ve` VEPrecond(NCSN++: Fourier embedding, residual encoder,
(1, 3, 3, 1) filter), `iddpm` iDDPMPrecond(DhariwalUNet), `adm` EDMPrecond(DhariwalUNet,
class labels); `edm_pickle_zoo_outputs.npz` holds EDM's `D(x; sigma)` for each.
"""

import dataclasses
import gzip
import pickle
import runpy
from pathlib import Path

import jax
import numpy as np
import pytest
from nn_helpers import import_edm

from gaussjax._torch import read_edm_pickle
from gaussjax.nn import DhariwalUNet, EDMPrecond, SongUNet, VEPrecond, VPPrecond, iDDPMPrecond, load_edm_pickle
from gaussjax.nn._edm_pickle import denoiser_from_record

DATA = Path(__file__).parent / "data"
KINDS = {"ema": (EDMPrecond, SongUNet), "vp": (VPPrecond, SongUNet), "ve": (VEPrecond, SongUNet),
         "iddpm": (iDDPMPrecond, DhariwalUNet), "adm": (EDMPrecond, DhariwalUNet)}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edm") / "edm_pickle_zoo.pkl"
    path.write_bytes(gzip.decompress((DATA / "edm_pickle_zoo.pkl.gz").read_bytes()))
    return path


def _check_outputs(denoiser, arrays: dict, key: str) -> None:
    if f"{key}/class_labels" in arrays:
        denoiser = dataclasses.replace(denoiser, class_labels=arrays[f"{key}/class_labels"])
    out = jax.jit(lambda d, x, s: d.denoise(x, s))(denoiser, arrays[f"{key}/x"], arrays[f"{key}/sigma"])
    np.testing.assert_allclose(out, arrays[f"{key}/output"], atol=2e-5, rtol=1e-4, err_msg=key)


@pytest.mark.parametrize("key", list(KINDS))
@pytest.mark.slow
def test_denoiser_matches_edm(zoo, key):
    denoiser = load_edm_pickle(zoo, network=key)
    precond, net = KINDS[key]
    assert type(denoiser.module) is precond and type(denoiser.module.net) is net
    _check_outputs(denoiser, dict(np.load(DATA / "edm_pickle_zoo_outputs.npz")), key)


@pytest.mark.slow
def test_constructor_arguments_are_edms(zoo):
    ve = load_edm_pickle(zoo, network="ve").module
    assert (ve.net.embedding_type, ve.net.encoder_type, ve.net.resample_filter) == ("fourier", "residual", (1, 3, 3, 1))
    freqs = read_edm_pickle(zoo)["ve"].modules["model"].modules["map_noise"].buffers["freqs"]
    np.testing.assert_array_equal(np.asarray(ve.net.fourier_freqs, np.float32), freqs)  # EDM's random buffer
    ema = load_edm_pickle(zoo).module
    assert (ema.net.label_dim, ema.net.augment_dim, ema.net.attn_resolutions) == (3, 9, (4,))
    assert load_edm_pickle(zoo, network="iddpm").module.net.out_channels == 2  # learned variance channels


@pytest.mark.slow  # every network of the zoo
def test_score_is_the_denoiser_identity(zoo):
    denoiser = load_edm_pickle(zoo, network="vp")
    x = jax.random.normal(jax.random.key(0), (3, denoiser.dim))
    np.testing.assert_allclose(denoiser.score(x, 0.7), (denoiser.denoise(x, 0.7) - x) / 0.49, rtol=1e-5, atol=1e-5)


def test_errors_name_what_cannot_be_mapped(zoo):
    with pytest.raises(ValueError, match=r"no network 'raw'.*\['adm', 'ema', 'iddpm', 've', 'vp'\]"):
        load_edm_pickle(zoo, network="raw")
    with pytest.raises(ValueError, match="has no preconditioner 'EDMLoss'"):
        load_edm_pickle(zoo, network="loss_fn")
    record = read_edm_pickle(zoo)["vp"]
    model = record.modules["model"]
    with pytest.raises(ValueError, match="has no network 'MyUNet'"):
        renamed = dataclasses.replace(model, class_name="MyUNet")
        denoiser_from_record(dataclasses.replace(record, modules={"model": renamed}))
    with pytest.raises(ValueError, match=r"VPPrecond.model: SongUNet has no argument\(s\) 'flash_attention'"):
        model = dataclasses.replace(model, init_kwargs={**model.init_kwargs, "flash_attention": True})
        denoiser_from_record(dataclasses.replace(record, modules={"model": model}))
    with pytest.raises(ValueError, match="positional arguments"):
        denoiser_from_record(dataclasses.replace(record, init_args=(8,)))
    with pytest.raises(ValueError, match="buffer 'extra' has no gaussjax counterpart"):
        denoiser_from_record(dataclasses.replace(record, buffers={"extra": np.zeros(2, np.float32)}))
    iddpm = read_edm_pickle(zoo)["iddpm"]
    with pytest.raises(ValueError, match="buffer 'u'"):
        denoiser_from_record(dataclasses.replace(iddpm, buffers={"u": iddpm.buffers["u"] * 1.01}))
    with pytest.raises(FileNotFoundError):
        load_edm_pickle(zoo.parent / "missing.pkl")


def test_live_every_kind_matches_edm(tmp_path):
    """Where torch and EDM import ($GAUSSJAX_EDM_SRC): fresh random networks, pickled as EDM does."""
    torch, _ = import_edm()
    generator = runpy.run_path(str(DATA / "make_edm_pickles.py"), run_name="make_edm_pickles")
    data, outputs = generator["zoo_snapshot"]()
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps(data))
    for key in KINDS:
        _check_outputs(load_edm_pickle(path, network=key), outputs, key)
