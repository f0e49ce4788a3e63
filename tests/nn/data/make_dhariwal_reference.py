"""Write edm_dhariwal_reference.npz: NVlabs/edm's DhariwalUNet (PyTorch) on fixed weights and inputs.

Run from a checkout of NVlabs/edm with torch installed (never imported by gaussjax):

    cd path/to/edm && python path/to/make_dhariwal_reference.py path/to/edm_dhariwal_reference.npz

Two tiny networks: 'cond' (label_dim=10, augment_dim=9, 64 channels so that its
attention blocks have one 64-channel head) and 'uncond' (down/up blocks; its 32-channel
"attention" blocks get EDM's `32 // 64 = 0` heads, i.e. none). Every parameter is
`q * 2**-e` with integers `|q| <= 4` and a per-tensor exponent `e` (about 1 / sqrt(fan_in)
in scale, so activations stay O(1)): exact in float16/float32 and small once compressed.
The file stores, per network: `config` (JSON), `index` (JSON list of [name, shape,
exponent]), `q` (int8, all parameters flattened in state-dict order), the inputs and
EDM's eval-mode output, all NCHW tensors transposed to NHWC. It also prints EDM's
parameter counts used by tests/nn/test_dhariwal.py.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.getcwd())  # the edm checkout
from training.networks import DhariwalUNet

CONFIGS = {
    "cond": {"img_resolution": 4, "in_channels": 3, "out_channels": 2, "label_dim": 10, "augment_dim": 9,
             "model_channels": 64, "channel_mult": [1], "channel_mult_emb": 1, "num_blocks": 0,
             "attn_resolutions": [4], "dropout": 0.1},
    "uncond": {"img_resolution": 8, "in_channels": 2, "out_channels": 3, "model_channels": 16,
               "channel_mult": [1, 2], "channel_mult_emb": 2, "num_blocks": 1, "attn_resolutions": [4],
               "dropout": 0.1},
}
COUNT_CONFIGS = {  # parameter counts only
    "imagenet64_adm": {"img_resolution": 64, "in_channels": 3, "out_channels": 3, "label_dim": 1000},
    "small": {"img_resolution": 32, "in_channels": 3, "out_channels": 3, "label_dim": 10, "augment_dim": 9,
              "model_channels": 64, "channel_mult": [1, 2], "num_blocks": 2, "attn_resolutions": [16]},
}
BATCH = 3


def _quantized(p: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """Integers `q` in [-4, 4] of `p`'s shape and the exponent `e` of the scale `2**-e`."""
    fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 4 * p.shape[0]
    exponent = round(float(np.log2(2.6 * np.sqrt(fan_in))))
    q = torch.randint(-4, 5, p.shape, generator=gen, dtype=torch.int8)
    return q, exponent


def _reference(config: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    net = DhariwalUNet(**config).eval()
    gen = torch.Generator().manual_seed(seed)
    index, qs = [], []
    with torch.no_grad():
        for name, p in net.named_parameters():
            q, e = _quantized(p, gen)
            p.copy_(q.float() * 2.0 ** -e)
            index.append([name, list(p.shape), e])
            qs.append(q.flatten())
        r, c = config["img_resolution"], config["in_channels"]
        x = torch.randn(BATCH, c, r, r, generator=gen)
        noise_labels = torch.randn(BATCH, generator=gen)
        labels = {}
        if config.get("label_dim"):
            classes = torch.randint(0, config["label_dim"], (BATCH,), generator=gen)
            labels["class_labels"] = torch.eye(config["label_dim"])[classes]
        if config.get("augment_dim"):
            labels["augment_labels"] = torch.randn(BATCH, config["augment_dim"], generator=gen)
        out = net(x, noise_labels, labels.get("class_labels"), labels.get("augment_labels"))
    data = {
        "config": json.dumps(config), "index": json.dumps(index), "q": torch.cat(qs).numpy(),
        "x": x.permute(0, 2, 3, 1).numpy(), "noise_labels": noise_labels.numpy(),
        "output": out.permute(0, 2, 3, 1).numpy(),
    }
    data.update({k: v.numpy() for k, v in labels.items()})
    print(f"{config}: |output| max {out.abs().max():.3f}, std {out.std():.3f}")
    return data


def main(path: str) -> None:
    arrays = {}
    for seed, (tag, config) in enumerate(CONFIGS.items()):
        arrays.update({f"{tag}/{k}": v for k, v in _reference(config, seed).items()})
    np.savez_compressed(path, **arrays)
    for tag, config in COUNT_CONFIGS.items():
        with torch.device("meta"):
            net = DhariwalUNet(**config)
        print(f"EDM parameter count, {tag}: {sum(p.numel() for p in net.parameters())}")


if __name__ == "__main__":
    main(sys.argv[1])
