"""The documentation site (mkdocs.yml, docs/, API pages from docstrings) builds with `mkdocs build --strict`.

Strict mode turns every warning into a failure: a broken link or anchor in docs/*.md, an
unresolved cross-reference, a docstring griffe cannot parse. The API pages must exist and
document the public names.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,  # a whole site build
    pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                       reason='mkdocs is not installed (pip install -e ".[docs]")'),
]

API_PAGES = {
    "api/index.html": ["solve_pf_ode", "heun_sampler", "DeltaMixture"],
    "api/scores/index.html": ["DeltaMixture", "GaussianMixture", "Isotropic", "log_density"],
    "api/fit/index.html": ["fit_gaussian", "fit_gmm", "kmeans"],
    "api/samplers/index.html": ["heun_sampler", "S_churn", "hybrid_sampler"],
    "api/ode/index.html": ["solve_pf_ode", "PFODESolution"],
    "api/solution/index.html": ["gaussian_trajectory", "teleport"],
    "api/schedules/index.html": ["karras_sigmas"],
    "api/metrics/index.html": ["fraction_unexplained_variance"],
    "api/evaluation/index.html": ["compare_scores"],
    "api/conventions/index.html": ["vp_denoise"],
    "api/data/index.html": ["load_dataset", "Dataset"],
    "api/nn/index.html": ["SongUNet", "EDMPrecond", "NeuralDenoiser"],
    "api/train/index.html": ["TrainConfig", "load_denoiser"],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about MkDocs 2.0
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return site_dir


def test_tutorials_are_pages(site):
    for page in ["index.html", "data", "scores", "dynamics", "training", "composing"]:
        path = site / page if page.endswith(".html") else site / page / "index.html"
        assert path.is_file(), path


@pytest.mark.parametrize("page", sorted(API_PAGES))
def test_api_page_documents_public_names(site, page):
    html = (site / page).read_text()
    for name in API_PAGES[page]:
        assert name in html, f"{page} does not mention {name}"
