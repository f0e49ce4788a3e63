"""The public surface: a light `import gaussjax`, sorted `__all__`s, the package version, the precision setting.

The API reference (docs/api/index.md) is checked against every `__all__`, so it cannot miss a name.
"""

import importlib
import importlib.metadata
import inspect
import pkgutil
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex

import gaussjax
import gaussjax._precision as precision

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("data", "fit", "nn", "quality", "scores")
LINK = re.compile(r"\[`([^`]+)`\]\[([\w.]+)\]")  # mkdocs-autorefs: [`name`][identifier]


def _public_modules() -> list[str]:
    """`gaussjax` and its public submodules (names without a leading `_`)."""
    return ["gaussjax"] + [f"gaussjax.{m.name}" for m in pkgutil.iter_modules(gaussjax.__path__)
                           if not m.name.startswith("_")]


def _modules_with_all() -> list[str]:
    return [name for name in _public_modules() if hasattr(importlib.import_module(name), "__all__")]


def test_every_public_module_declares_all():
    assert _modules_with_all() == _public_modules()


def _run(script: str) -> None:
    """Run `script` in a fresh interpreter at the repository root; fail with its output if it fails."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# -- a light import, lazy subpackages --


def test_import_loads_neither_flax_optax_nor_orbax_and_subpackages_load_on_access():
    _run("""
        import sys
        import gaussjax as gj

        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"flax", "optax", "orbax"})
        assert not heavy, f"import gaussjax loaded {heavy}"
        assert "gaussjax.nn" not in sys.modules and "gaussjax.quality" not in sys.modules
        assert {"data", "nn", "quality"} <= set(dir(gj))

        assert gj.nn.SongUNet.__name__ == "SongUNet"
        assert "flax" in sys.modules and gj.nn is sys.modules["gaussjax.nn"]
        assert gj.quality.frechet_distance is sys.modules["gaussjax.quality"].frechet_distance
        from gaussjax.nn import load_edm_pickle
        import gaussjax.data
        assert gj.data.load_dataset is gaussjax.data.load_dataset
    """)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="'gaussjax' has no attribute 'no_such_name'"):
        gaussjax.no_such_name  # noqa: B018
    assert not hasattr(gaussjax, "no_such_name")


def test_every_public_module_is_an_attribute():
    for name in _public_modules()[1:]:
        assert getattr(gaussjax, name.split(".")[1]) is importlib.import_module(name)


# -- one privacy convention: public names are each module's sorted `__all__` --


def test_every_subpackage_declares_all():
    assert set(SUBPACKAGES) <= {name.split(".")[-1] for name in _modules_with_all()}


@pytest.mark.parametrize("name", _modules_with_all())
def test_all_is_sorted_unique_and_resolves(name):
    module = importlib.import_module(name)
    assert module.__all__ == sorted(set(module.__all__)), f"{name}.__all__ is not sorted and unique"
    for attribute in module.__all__:
        assert not attribute.startswith("_")
        assert hasattr(module, attribute), f"{name}.__all__ names {attribute!r}, which it lacks"


def test_top_level_all_holds_names_and_every_other_public_name_is_a_module():
    assert not any(inspect.ismodule(getattr(gaussjax, name)) for name in gaussjax.__all__)
    others = {name for name in dir(gaussjax) if not name.startswith("_")} - set(gaussjax.__all__)
    assert all(inspect.ismodule(getattr(gaussjax, name)) for name in others), sorted(others)


def _defined_here(module) -> set[str]:
    """Names of the functions and classes that `module` itself defines."""
    return {name for name, obj in vars(module).items()
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__}


@pytest.mark.parametrize("name", _modules_with_all())
def test_what_a_module_defines_is_in_all_or_private(name):
    module = importlib.import_module(name)
    accidental = sorted(n for n in _defined_here(module) - set(module.__all__) if not n.startswith("_"))
    assert not accidental, f"{name} defines {accidental}: add them to __all__ or prefix them with _"


def test_evaluation_keeps_its_helpers_private():
    assert {"format_table", "denoiser_r2", "NoisedData", "PureNoise"} <= set(gaussjax.evaluation.__all__)
    assert not {"STATISTICS", "check_output_shape"} & set(vars(gaussjax.evaluation))


# -- the version --


def test_version_is_the_installed_package_metadata():
    assert gaussjax.__version__ == importlib.metadata.version("gaussjax")
    _run("""
        import importlib, importlib.metadata

        installed = importlib.metadata.version
        importlib.metadata.version = lambda name: "7.8.9" if name == "gaussjax" else installed(name)
        import gaussjax
        assert gaussjax.__version__ == "7.8.9", gaussjax.__version__

        def missing(name):
            if name == "gaussjax":
                raise importlib.metadata.PackageNotFoundError(name)
            return installed(name)
        importlib.metadata.version = missing
        assert importlib.reload(gaussjax).__version__ == "0+unknown"
    """)


# -- the precision of the analytic products --


def _dot_precisions(closed: jex.ClosedJaxpr) -> list:
    """The `precision` parameter of every dot_general in `closed`, nested jaxprs included."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(eqn.params["precision"])
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple) else (value,):
                    if isinstance(sub, jex.ClosedJaxpr):
                        visit(sub.jaxpr)
                    elif isinstance(sub, jex.Jaxpr):
                        visit(sub)

    visit(closed.jaxpr)
    return found


GAUSSIAN = gaussjax.Gaussian(np.zeros(4, np.float32), np.ones(2, np.float32), np.eye(4, 2, dtype=np.float32))
X = jnp.ones((3, 4), jnp.float32)


def _traced_precisions():
    """Precisions of the products of a Gaussian denoiser and of `_precision.einsum`, traced now."""
    products = _dot_precisions(jax.make_jaxpr(GAUSSIAN.denoise)(X, 0.5))
    products += _dot_precisions(jax.make_jaxpr(lambda a: precision.einsum("ij,kj->ik", a, a))(X))
    assert len(products) >= 2
    return set(products)


def test_products_are_highest_by_default():
    highest = jax.lax.Precision.HIGHEST
    assert _traced_precisions() == {(highest, highest)}


@pytest.mark.parametrize("setting, expected", [
    ("default", jax.lax.Precision.DEFAULT),
    ("HIGH", jax.lax.Precision.HIGH),
    ("tensorfloat32", jax.lax.Precision.HIGH),
    (jax.lax.Precision.DEFAULT, jax.lax.Precision.DEFAULT),
])
def test_matmul_precision_sets_the_traced_precision_and_restores_it(setting, expected):
    highest = jax.lax.Precision.HIGHEST
    with gaussjax.matmul_precision(setting):
        assert _traced_precisions() == {(expected, expected)}
    assert _traced_precisions() == {(highest, highest)}


def test_a_function_compiled_before_the_block_is_retraced_inside_it():
    denoise = jax.jit(lambda x: GAUSSIAN.denoise(x, 0.5))
    expected = np.asarray(denoise(X))  # compiled at HIGHEST
    with gaussjax.matmul_precision("default"):
        assert set(_dot_precisions(jax.make_jaxpr(denoise)(X))) == {(jax.lax.Precision.DEFAULT,) * 2}
        np.testing.assert_allclose(denoise(X), expected, rtol=1e-6)  # CPU products are exact at any setting
    assert set(_dot_precisions(jax.make_jaxpr(denoise)(X))) == {(jax.lax.Precision.HIGHEST,) * 2}


def test_matmul_precision_nests_and_restores_on_error():
    default, high = jax.lax.Precision.DEFAULT, jax.lax.Precision.HIGH
    with pytest.raises(ZeroDivisionError), gaussjax.matmul_precision("high"):
        with gaussjax.matmul_precision("default"):
            assert _traced_precisions() == {(default, default)}
        assert _traced_precisions() == {(high, high)}
        1 / 0  # noqa: B018
    assert _traced_precisions() == {(jax.lax.Precision.HIGHEST,) * 2}


def test_matmul_precision_is_local_to_its_thread():
    seen = []
    with gaussjax.matmul_precision("default"):
        thread = threading.Thread(target=lambda: seen.append(_traced_precisions()))
        thread.start()
        thread.join()
    assert seen == [{(jax.lax.Precision.HIGHEST,) * 2}]


@pytest.mark.parametrize("setting, error", [("fast", ValueError), (None, TypeError), (2, TypeError)])
def test_matmul_precision_rejects_unknown_settings(setting, error):
    with pytest.raises(error, match="`precision`"), gaussjax.matmul_precision(setting):
        pass


# -- the API reference lists every public name --


def _resolve(identifier: str):
    """The object at dotted path `identifier` (a module, then attributes)."""
    parts = identifier.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for part in parts[split:]:
            obj = getattr(obj, part)
        return obj
    raise AssertionError(f"{identifier} names no module")


def test_api_reference_links_resolve():
    links = LINK.findall((ROOT / "docs" / "api" / "index.md").read_text())
    for text, identifier in links:
        assert identifier.rsplit(".", 1)[-1] == text, f"[`{text}`][{identifier}]: the text is not the name"
        _resolve(identifier)


@pytest.mark.parametrize("name", _modules_with_all())
def test_api_reference_lists_every_public_name(name):
    linked = {(text, id(_resolve(identifier)))
              for text, identifier in LINK.findall((ROOT / "docs" / "api" / "index.md").read_text())}
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if (n, id(getattr(module, n))) not in linked]
    assert not missing, f"docs/api/index.md does not link {name}'s {missing}"
