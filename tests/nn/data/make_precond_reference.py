"""Write `edm_precond_reference.npz`: NVlabs/edm's four preconditioners around a tiny SongUNet, evaluated by PyTorch.

Run in a PyTorch environment from the root of an NVlabs/edm checkout (so that
`training.networks` imports), e.g.

    cd edm && python /path/to/gaussjax/tests/nn/data/make_precond_reference.py /path/to/out.npz

For each tag (`edm`, `vp`, `ve`, `iddpm`) the file holds, under `<tag>/...`:
`config` (JSON: the preconditioner class and arguments, and the SongUNet arguments),
`params` (the network's parameters, float16-exact random values, concatenated as
float16) with `index` (JSON list of `[state-dict name, shape]` in the same order),
`x (N, H, W, C)` and `sigma (N,)` (NHWC, float32), `output` (`D(x; sigma)` in eval mode,
NHWC), `sigma_min`/`sigma_max` (the preconditioner's attributes) and `round_sigma`
(its rounding of `sigma`). `edm` is class-conditional: `class_labels (N, 3)` and
`output_no_labels` (EDM's default, zero labels). `iddpm` also stores the `u` buffer.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.getcwd())  # the edm checkout
from training import networks

N = 6  # queries per preconditioner
UNET = {"img_resolution": 8, "model_channels": 4, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [],
        "dropout": 0.0}


def _sigmas(tag, precond):
    if tag == "iddpm":  # three table entries and three points 30% of the way to the next-larger entry
        u = precond.u.numpy().astype(np.float64)
        k = np.array([998, 700, 300, 900, 500, 5])
        return np.where(np.arange(N) < 3, u[k], u[k] + 0.3 * (u[k - 1] - u[k]))
    low, high = {"edm": (0.002, 80.0), "vp": (precond.sigma_min, precond.sigma_max), "ve": (0.02, 100.0)}[tag]
    return np.geomspace(low, high, N)


def _case(tag, cls, img_channels, label_dim, seed, **precond_kwargs):
    torch.manual_seed(seed)
    precond = cls(img_resolution=8, img_channels=img_channels, label_dim=label_dim, model_type="SongUNet",
                  **precond_kwargs, **{k: v for k, v in UNET.items() if k != "img_resolution"}).eval()
    names, shapes, values = [], [], []
    with torch.no_grad():
        for name, p in precond.model.named_parameters():
            p.copy_((0.25 * torch.randn_like(p)).half().float())  # float16-exact, so the stored copy is lossless
            names.append(name)
            shapes.append(list(p.shape))
            values.append(p.numpy().ravel())
    sigma = torch.as_tensor(_sigmas(tag, precond), dtype=torch.float32)
    clean = torch.rand(N, img_channels, 8, 8) * 2 - 1
    x = clean + sigma.reshape(-1, 1, 1, 1) * torch.randn(N, img_channels, 8, 8)
    labels = torch.eye(label_dim)[torch.arange(N) % label_dim] if label_dim else None
    with torch.no_grad():
        out = precond(x, sigma, labels)

    def nhwc(t):
        return t.permute(0, 2, 3, 1).numpy().astype(np.float32)

    config = {"precond": cls.__name__, "precond_kwargs": precond_kwargs,
              "net": dict(UNET, in_channels=img_channels, label_dim=label_dim,
                          out_channels=2 * img_channels if cls is networks.iDDPMPrecond else img_channels)}
    record = {"config": json.dumps(config), "index": json.dumps([list(e) for e in zip(names, shapes, strict=True)]),
              "params": np.concatenate(values).astype(np.float16), "x": nhwc(x), "sigma": sigma.numpy(),
              "output": nhwc(out), "sigma_min": np.float64(precond.sigma_min),
              "sigma_max": np.float64(precond.sigma_max), "round_sigma": precond.round_sigma(sigma).numpy()}
    if label_dim:
        record["class_labels"] = labels.numpy()
        with torch.no_grad():
            record["output_no_labels"] = nhwc(precond(x, sigma))
    if tag == "iddpm":
        record["u"] = precond.u.numpy()
    return {f"{tag}/{k}": v for k, v in record.items()}


def main(path):
    arrays = {}
    arrays.update(_case("edm", networks.EDMPrecond, 2, 3, 0))
    arrays.update(_case("vp", networks.VPPrecond, 1, 0, 1))
    arrays.update(_case("ve", networks.VEPrecond, 1, 0, 2))
    arrays.update(_case("iddpm", networks.iDDPMPrecond, 1, 0, 3))
    np.savez_compressed(path, **arrays)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "edm_precond_reference.npz")
