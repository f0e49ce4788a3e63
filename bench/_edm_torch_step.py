"""NVlabs/edm's own training step, timed on request: the PyTorch side of bench/train_step.py.

Run with a Python that has torch, from anywhere:

    python bench/_edm_torch_step.py --edm-src /path/to/edm --network '{"model_channels": 32, ...}' \
        --image-shape 8,8,1 --batch 256 --steps 4

It builds EDM's `EDMPrecond(SongUNet)`, `EDMLoss` and `torch.optim.Adam` unmodified, with the
network arguments given (those of the gaussjax network timed beside it), and then, for every
line `run` on stdin, performs `--steps` training steps as `training/training_loop.py` does
them (loss, backward, the learning-rate ramp-up, `nan_to_num` of the gradients, Adam, the
EMA update) and prints their wall time in seconds. `quit` ends it. Nothing of EDM is copied
here; its classes are imported from `--edm-src`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edm-src", required=True)
    parser.add_argument("--network", required=True, help="SongUNet keyword arguments (JSON)")
    parser.add_argument("--image-shape", required=True, help="H,W,C")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    sys.path.insert(0, args.edm_src)
    import torch
    from training.loss import EDMLoss
    from training.networks import EDMPrecond

    if args.threads:
        torch.set_num_threads(args.threads)
    height, width, channels = (int(v) for v in args.image_shape.split(","))
    kwargs = json.loads(args.network)
    for name in ("img_resolution", "in_channels", "out_channels"):
        kwargs.pop(name, None)
    torch.manual_seed(0)
    net = EDMPrecond(img_resolution=height, img_channels=channels, model_type="SongUNet", **kwargs).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    loss_fn = EDMLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    data = torch.rand(2048, channels, height, width) * 2 - 1
    ema_beta = 0.5 ** (args.batch / 25_000)
    step = 0

    def train_step():
        nonlocal step
        index = torch.randint(0, len(data), (args.batch,))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net=net, images=data[index])
        loss.sum().mul(1 / args.batch).backward()
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min((step + 1) / 100, 1)  # the digits config's 100-step warm-up
        for param in net.parameters():
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
        optimizer.step()
        with torch.no_grad():
            for p_ema, p_net in zip(ema.parameters(), net.parameters(), strict=True):
                p_ema.copy_(p_net.detach().lerp(p_ema, ema_beta))
        step += 1

    print(json.dumps({"parameters": sum(p.numel() for p in net.parameters()), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step()
        print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    main()
