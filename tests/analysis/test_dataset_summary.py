import numpy as np
from sklearn.decomposition import PCA

from analysis.__main__ import main
from analysis.dataset_summary import summarize
from gaussjax.data import load_dataset


def test_spectrum_matches_sklearn_pca():
    dataset = load_dataset("digits")
    summary = summarize(dataset)
    pca = PCA().fit(dataset.flat.astype(np.float64))
    n = len(dataset)
    np.testing.assert_allclose(summary.eigvals, pca.explained_variance_ * (n - 1) / n, rtol=1e-8, atol=1e-10)
    ratio = np.cumsum(pca.explained_variance_ratio_)
    assert summary.components_for[0.9] == int(np.argmax(ratio >= 0.9)) + 1
    assert sum(summary.class_counts.values()) == n


def test_cli_prints_summary_and_writes_figures(tmp_path, capsys):
    assert main(["dataset", "digits", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1442 images of 8x8x1 (D = 64)" in out
    assert (tmp_path / "digits_samples.png").stat().st_size > 1000
    assert (tmp_path / "digits_spectrum.png").stat().st_size > 1000


def test_cli_reports_missing_files_as_an_error(monkeypatch, capsys):
    monkeypatch.delenv("GAUSSJAX_DATA", raising=False)
    assert main(["dataset", "mnist"]) == 2
    assert "pass root=" in capsys.readouterr().err


def test_cli_rejects_unknown_dataset(capsys):
    assert main(["dataset", "imagenet"]) == 2
    assert "error: `name` invalid choice: 'imagenet'" in capsys.readouterr().err
