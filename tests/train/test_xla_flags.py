from train.xla_flags import YNN_FLAG, jaxlib_knows_flag, prefer_eigen_kernels


def test_known_and_unknown_flags():
    assert jaxlib_knows_flag("--xla_force_host_platform_device_count")  # an XLA:CPU flag of every jaxlib
    assert not jaxlib_knows_flag("--xla_no_such_flag_gaussjax")


def test_prefer_eigen_kernels_adds_the_flag_only_when_undecided():
    environ = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    prefer_eigen_kernels(environ)
    if jaxlib_knows_flag(YNN_FLAG):
        assert environ["XLA_FLAGS"] == f"--xla_backend_optimization_level=0 {YNN_FLAG}="
    else:
        assert environ["XLA_FLAGS"] == "--xla_backend_optimization_level=0"
    decided = {"XLA_FLAGS": f"{YNN_FLAG}=dot"}
    prefer_eigen_kernels(decided)
    assert decided == {"XLA_FLAGS": f"{YNN_FLAG}=dot"}


def test_python_m_train_sets_the_flag_before_jax_starts():
    """`python -m train` sets XLA_FLAGS before anything (its argument parser included) imports JAX."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    script = ("import os, sys; from train.__main__ import main; main(['--dry-run']); "
              "print('XLA_FLAGS=' + os.environ.get('XLA_FLAGS', ''))")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    flags = next(line for line in out.splitlines() if line.startswith("XLA_FLAGS="))
    assert flags == (f"XLA_FLAGS={YNN_FLAG}=" if jaxlib_knows_flag(YNN_FLAG) else "XLA_FLAGS=")
