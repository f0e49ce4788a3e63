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
