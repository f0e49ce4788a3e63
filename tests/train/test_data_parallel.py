import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

DATA_PARALLEL = """
import jax, numpy as np, sys
from train.configs import get_config
from train.run import train
from gaussjax.runs import Checkpointer
assert jax.local_device_count() == int(sys.argv[2])
config = get_config("digits-tiny").replace(steps=20, probe_queries=8, probe_delta=False)
train(config, sys.argv[1], progress=False, log=lambda *a: None)
params = Checkpointer(sys.argv[1]).restore_params(20, "raw")
np.save(sys.argv[1] + "/params.npy", np.concatenate([np.asarray(x, np.float64).ravel()
        for x in jax.tree_util.tree_leaves(params)]))
"""


@pytest.mark.slow
def test_data_parallel_on_four_devices_matches_one(tmp_path):
    results = {}
    for devices in (1, 4):
        flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
        out = tmp_path / f"d{devices}"
        run = subprocess.run([sys.executable, "-c", DATA_PARALLEL, str(out), str(devices)], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        results[devices] = np.load(out / "params.npy")
    np.testing.assert_allclose(results[4], results[1], rtol=1e-4, atol=1e-5)
