"""Write the FID Inception fixtures of `tests/quality/test_inception.py` with torch and pytorch-fid.

Run (outside the repository's venv; torch never enters gaussjax):

    python3 -m venv /work/torchref/fidvenv
    /work/torchref/fidvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/torchref/fidvenv/bin/pip install pytorch-fid==0.3.0 --no-deps scipy pillow numpy
    /work/torchref/fidvenv/bin/python tests/quality/data/make_inception_fixture.py

It writes, next to this file:

- `inception_features.npz`: `images_a (2, 32, 32, 3)` and `images_b (1, 400, 24, 3)` uint8
  (the gaussjax inputs are `u8 / 127.5 - 1` in [-1, 1]), and `features_a`, `features_b`, the
  `(B, 2048)` float32 pool3 features of pytorch-fid's `InceptionV3([3])` (resize and
  normalize on, FID blocks) on the same images as NCHW in [0, 1], with the weights of
  `random_state_dict` (the real weights cannot be downloaded here, and need not be: the
  weights are a pure function of the parameter names and shapes, so the test rebuilds
  them in NumPy without torch).
- `tiny_state_legacy.pt`, `tiny_state_zip.pt`: `torch.save` of a small OrderedDict state
  dict (`tiny_tensors`) in the legacy and the zip format, and `tiny_state_expected.npz`,
  its arrays as NumPy wrote them.

Only the functions without torch (`random_state_dict`, `images_from_uint8`) are imported by
the tests; `pytorch_fid_network` is imported by the live test, where torch is installed.
"""

from __future__ import annotations

import collections
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Deterministic float32 weights for FID's Inception, each drawn from a generator seeded by its name.

    Conv weights `(O, I, kh, kw)` ~ N(0, 2 / fan_in) (He: the second moment survives each
    ReLU), bn weight U(0.8, 1.2), bias and running mean N(0, 0.1^2), running var U(0.5, 1.5);
    anything else (the classifier) N(0, 0.01^2). `num_batches_tracked` is not drawn.
    """
    out = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            continue
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        if name.endswith(".conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif name.endswith(".bn.weight"):
            value = rng.uniform(0.8, 1.2, shape)
        elif name.endswith((".bn.bias", ".bn.running_mean")):
            value = 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bn.running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = 0.01 * rng.standard_normal(shape)
        out[name] = value.astype(np.float32)
    return out


def images_from_uint8(u8: np.ndarray) -> np.ndarray:
    """gaussjax's [-1, 1] float32 images from stored uint8 ones."""
    return u8.astype(np.float32) / np.float32(127.5) - np.float32(1)


def pytorch_fid_network(torch):
    """pytorch-fid's `InceptionV3([3])` (FID blocks) with `random_state_dict` weights, and its inner `Inception3`.

    pytorch-fid would download the real weights; `load_state_dict_from_url` is patched to
    return the freshly built network's own state dict instead, and then every parameter
    and buffer is overwritten with `random_state_dict`.
    """
    import pytorch_fid.inception as fid

    built = []
    make, load = fid._inception_v3, fid.load_state_dict_from_url

    def capture(*args, **kwargs):
        built.append(make(*args, **kwargs))
        return built[-1]

    fid._inception_v3 = capture
    fid.load_state_dict_from_url = lambda *args, **kwargs: built[-1].state_dict()
    try:
        net = fid.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)
    finally:
        fid._inception_v3, fid.load_state_dict_from_url = make, load
    inception = built[-1]
    state = inception.state_dict()
    weights = random_state_dict({name: tuple(value.shape) for name, value in state.items()})
    missing = inception.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()},
                                        strict=False)
    assert not missing.unexpected_keys and all(k.endswith("num_batches_tracked") for k in missing.missing_keys)
    return net.eval(), inception.eval()


def tiny_tensors(torch) -> collections.OrderedDict:
    """A small state dict: float32, float16, int64, a strided view sharing a storage, a 0-d tensor."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8 - 1
    state = collections.OrderedDict()
    state["layer.weight"] = base
    state["layer.weight_t_view"] = base.t()[1:5:2, ::3]  # non-contiguous, offset into base's storage
    state["half"] = torch.tensor([1.5, -2.25, 65504.0, 6e-5], dtype=torch.float16)
    state["counts"] = torch.tensor([[3, -7], [2**40, 0]], dtype=torch.int64)
    state["scalar"] = torch.tensor(0.125)
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("layer", {"version": 2})])
    return state


def main() -> None:
    import torch

    torch.manual_seed(0)
    net, _ = pytorch_fid_network(torch)
    rng = np.random.default_rng(20261201)
    images = {"a": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
              "b": rng.integers(0, 256, (1, 400, 24, 3), dtype=np.uint8)}
    arrays = {}
    for key, u8 in images.items():
        x = torch.from_numpy(images_from_uint8(u8)).permute(0, 3, 1, 2)
        with torch.no_grad():
            features = net((x + 1) / 2)[0][:, :, 0, 0].numpy().astype(np.float32)
        print(key, u8.shape, "features: max", features.max(), "mean", features.mean(), "min", features.min())
        arrays[f"images_{key}"], arrays[f"features_{key}"] = u8, features
    np.savez_compressed(HERE / "inception_features.npz", **arrays)

    state = tiny_tensors(torch)
    torch.save(state, HERE / "tiny_state_legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(state, HERE / "tiny_state_zip.pt")
    np.savez(HERE / "tiny_state_expected.npz", **{name: value.numpy() for name, value in state.items()})
    print("torch", torch.__version__)


if __name__ == "__main__":
    main()
