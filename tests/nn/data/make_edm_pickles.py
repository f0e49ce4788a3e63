"""Write small EDM snapshot pickles, made by NVlabs/edm's own classes, for tests/nn/test_torch_pickle.py.

Run inside a torch environment from a checkout of NVlabs/edm (so ``training``, ``torch_utils`` and ``dnnlib``
import)::

    cd /path/to/edm && python /path/to/gaussjax/tests/nn/data/make_edm_pickles.py --out tests/nn/data

For every entry of ``CONFIGS`` it writes, per requested storage format, ``edm_pickle_<name>.pkl`` (a snapshot
dict laid out as ``training/training_loop.py`` writes it, storages in torch's legacy format as torch pickles
them) and/or ``edm_pickle_<name>_zip.pkl`` (the same snapshot with every storage serialized in torch's zip
format instead), and ``edm_pickle_<name>_state.npz`` (the network's
``state_dict()`` as torch computes it, plus its constructor kwargs as JSON under ``__init_kwargs__``).
To add a network kind, add a name -> (class, kwargs, seed, formats) entry to ``CONFIGS``.

It also writes ``edm_pickle_zoo.pkl.gz`` (gzip-compressed): one snapshot holding a tiny network of every kind gaussjax
imports (``ZOO``: EDM / VP / VE / iDDPM preconditioning around DDPM++, NCSN++ and ADM), pickled together as
``training_loop.py`` pickles its snapshot (so EDM's embedded source is stored once), and
``edm_pickle_zoo_outputs.npz`` with, per network, inputs ``x`` (NHWC), ``sigma``, ``class_labels`` and EDM's
``D(x; sigma)`` (NHWC) in eval mode, for tests/nn/test_edm_pickle.py.
"""

import argparse
import contextlib
import copy
import gzip
import importlib
import io
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

SONGUNET_KWARGS = {
    "img_resolution": 8, "img_channels": 1, "label_dim": 0, "model_type": "SongUNet", "model_channels": 4,
    "channel_mult": [1, 2], "channel_mult_emb": 2, "num_blocks": 1, "attn_resolutions": [4],
    "embedding_type": "positional", "channel_mult_noise": 1,
    "encoder_type": "standard", "decoder_type": "standard", "resample_filter": [1, 1],
}

# A single resolution level (no resampling): few tensors, so even its zip-format pickle stays small.
SONGUNET_MINI_KWARGS = dict(SONGUNET_KWARGS, img_resolution=4, channel_mult=[1], attn_resolutions=[4])

# name -> (EDM network class, constructor kwargs, seed, storage formats to write)
CONFIGS = {
    "songunet": ("training.networks.EDMPrecond", SONGUNET_KWARGS, 0, ("legacy",)),
    "songunet_mini": ("training.networks.EDMPrecond", SONGUNET_MINI_KWARGS, 1, ("legacy", "zip")),
}


_TINY = {"img_resolution": 8, "model_channels": 4, "channel_mult": [1, 2], "num_blocks": 1}
_NCSNPP = {"embedding_type": "fourier", "channel_mult_noise": 2, "encoder_type": "residual",
           "decoder_type": "standard", "resample_filter": [1, 3, 3, 1]}
# snapshot key -> (EDM preconditioner class, constructor kwargs, seed, sigmas evaluated); tiny but of every kind
ZOO = {
    "ema": ("training.networks.EDMPrecond", dict(_TINY, img_channels=2, label_dim=3, model_type="SongUNet",
            augment_dim=9, attn_resolutions=[4], channel_mult_emb=2), 10, [0.002, 0.3, 2.0, 80.0]),
    "vp": ("training.networks.VPPrecond", dict(_TINY, img_channels=1, model_type="SongUNet", attn_resolutions=[]),
           11, [0.01, 0.5, 5.0, 80.0]),
    "ve": ("training.networks.VEPrecond", dict(_TINY, img_channels=1, model_type="SongUNet", attn_resolutions=[4],
           **_NCSNPP), 12, [0.02, 0.5, 5.0, 80.0]),
    "iddpm": ("training.networks.iDDPMPrecond", dict(_TINY, img_channels=1, model_type="DhariwalUNet",
              attn_resolutions=[]), 13, [0.01, 0.31, 5.0, 80.0]),
    "adm": ("training.networks.EDMPrecond", dict(_TINY, img_channels=3, label_dim=4, model_type="DhariwalUNet",
            attn_resolutions=[4]), 14, [0.002, 0.3, 2.0, 80.0]),
}


def build_network(class_name: str, kwargs: dict, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """EDM's ``class_name(**kwargs)`` with float16-exact random parameters (``scale`` times N(0, 1)) from ``seed``."""
    module, name = class_name.rsplit(".", 1)
    torch.manual_seed(seed)
    net = getattr(importlib.import_module(module), name)(**copy.deepcopy(kwargs))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_((scale * torch.randn_like(p)).half().float())
    return net


def zoo_outputs(networks: dict, seed: int = 0) -> dict:
    """Per network: NHWC inputs, sigmas, labels and EDM's denoiser output, as ``<key>/<name>`` arrays."""
    arrays = {}
    generator = torch.Generator().manual_seed(seed)
    for key, net in networks.items():
        sigma = torch.tensor(ZOO[key][3], dtype=torch.float32)
        n, c, r = len(sigma), net.img_channels, net.img_resolution
        x = torch.randn(n, c, r, r, generator=generator) * (1 + sigma[:, None, None, None])
        labels = None
        if net.label_dim:
            labels = torch.nn.functional.one_hot(torch.arange(n) % net.label_dim, net.label_dim).float()
            arrays[f"{key}/class_labels"] = labels.numpy()
        with torch.no_grad():
            out = net.eval()(x, sigma, labels).float()
        arrays[f"{key}/x"] = x.permute(0, 2, 3, 1).numpy()
        arrays[f"{key}/sigma"] = sigma.numpy()
        arrays[f"{key}/output"] = out.permute(0, 2, 3, 1).numpy()
    return arrays


def zoo_snapshot() -> tuple[dict, dict]:
    """The snapshot dict of every ``ZOO`` network (training_loop.py's layout) and their outputs."""
    networks = {key: build_network(cls, kwargs, seed, scale=0.25) for key, (cls, kwargs, seed, _) in ZOO.items()}
    data = snapshot(networks.pop("ema"))
    data.update({key: copy.deepcopy(net).eval().requires_grad_(False).cpu() for key, net in networks.items()})
    return data, zoo_outputs({key: data[key] for key in ZOO})


# EDM's DDPM++ CIFAR-10 network (config F, 56M parameters): bench/load_edm_pickle.py's file, random weights
CIFAR10_KWARGS = {"img_resolution": 32, "img_channels": 3, "label_dim": 0, "model_type": "SongUNet", "augment_dim": 9,
                  "model_channels": 128, "channel_mult": [2, 2, 2], "dropout": 0.13, "embedding_type": "positional",
                  "encoder_type": "standard", "decoder_type": "standard", "channel_mult_noise": 1,
                  "resample_filter": [1, 1]}


def write_cifar10_size(path: Path) -> None:
    """A snapshot of the CIFAR-10 configuration with random weights (~220 MB), for the loading benchmark."""
    path.write_bytes(pickle.dumps(snapshot(build_network("training.networks.EDMPrecond", CIFAR10_KWARGS, 0))))


def write_zoo(out: Path) -> None:
    """The zoo snapshot, gzip-compressed (the test unpacks it: the reader takes the plain pickle), and outputs."""
    data, outputs = zoo_snapshot()
    (out / "edm_pickle_zoo.pkl.gz").write_bytes(gzip.compress(pickle.dumps(data), mtime=0))
    np.savez_compressed(out / "edm_pickle_zoo_outputs.npz", **outputs)


def snapshot(net: torch.nn.Module) -> dict:
    """The dict ``training_loop.py`` pickles: modules deep-copied, set to eval, frozen and moved to the CPU."""
    import dnnlib
    from training.augment import AugmentPipe
    from training.loss import EDMLoss

    dataset_kwargs = dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset", path="datasets/tiny.zip",
                                     use_labels=False, xflip=False, cache=True, resolution=8, max_size=16)
    data = {"ema": net, "loss_fn": EDMLoss(), "augment_pipe": AugmentPipe(p=0.12, xflip=1e8, yflip=1, scale=1,
                rotate_frac=1, aniso=1, translate_frac=1), "dataset_kwargs": dict(dataset_kwargs)}
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            data[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
    return data


@contextlib.contextmanager
def zip_storages():
    """Within the block, storages pickle as ``_load_from_bytes(torch.save(..., zip format))``."""
    def reduce(self):
        buffer = io.BytesIO()
        torch.save(self, buffer, _use_new_zipfile_serialization=True)
        return (torch.storage._load_from_bytes, (buffer.getvalue(),))

    classes = (torch.storage.TypedStorage, torch.storage.UntypedStorage)
    saved = [cls.__reduce__ for cls in classes]
    try:
        for cls in classes:
            cls.__reduce__ = reduce
        yield
    finally:
        for cls, original in zip(classes, saved, strict=True):
            cls.__reduce__ = original


def write(out: Path, name: str, class_name: str, kwargs: dict, seed: int, formats: tuple) -> None:
    """Write the config's snapshot in each storage format, and its state dict and kwargs as npz."""
    net = build_network(class_name, kwargs, seed)
    data = snapshot(net)
    if "legacy" in formats:
        (out / f"edm_pickle_{name}.pkl").write_bytes(pickle.dumps(data))
    if "zip" in formats:
        with zip_storages():
            (out / f"edm_pickle_{name}_zip.pkl").write_bytes(pickle.dumps(data))
    state = {key: value.numpy() for key, value in data["ema"].state_dict().items()}
    np.savez_compressed(out / f"edm_pickle_{name}_state.npz", __init_kwargs__=np.array(json.dumps(kwargs)), **state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the fixtures (default: .)")
    parser.add_argument("--edm", type=Path, default=Path(os.getcwd()), help="NVlabs/edm checkout (default: cwd)")
    parser.add_argument("--only", choices=sorted(CONFIGS), nargs="*", help="configs to write (default: all)")
    parser.add_argument("--cifar10-size", type=Path, default=None,
                        help="instead: write a CIFAR-10-size snapshot (random weights) to this path")
    args = parser.parse_args()
    sys.path.insert(0, str(args.edm.resolve()))
    if args.cifar10_size is not None:
        write_cifar10_size(args.cifar10_size)
        print(f"{args.cifar10_size}: {args.cifar10_size.stat().st_size} B")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only is None:
        write_zoo(args.out)
        print("zoo", *(f"{p.name}: {p.stat().st_size} B" for p in sorted(args.out.glob("edm_pickle_zoo*"))))
    for name in args.only or sorted(CONFIGS):
        write(args.out, name, *CONFIGS[name])
        written = sorted(args.out.glob(f"edm_pickle_{name}.pkl")) + sorted(args.out.glob(f"edm_pickle_{name}_*"))
        print(name, *(f"{p.name}: {p.stat().st_size} B" for p in written))


if __name__ == "__main__":
    main()
