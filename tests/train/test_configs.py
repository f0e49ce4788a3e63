import json

import pytest

from train.__main__ import main
from train.checkpoints import checkpoint_steps
from train.configs import CONFIGS, get_config


def test_unknown_config_lists_known_ones(capsys):
    with pytest.raises(ValueError, match="known configs: digits, patches, mnist, cifar10"):
        get_config("imagenet")
    assert main(["--config", "imagenet", "--dry-run"]) == 2
    assert "known configs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "`steps` must be a positive integer"),
        (["--lr=-1e-3"], "`lr` must be > 0"),
        (["--batch-size", "0"], "`batch_size` must be a positive integer"),
        (["--checkpoint-every", "0"], "`checkpoint_every` must be a positive integer"),
    ],
)
def test_invalid_values_are_refused_before_work(argv, message, capsys, tmp_path):
    assert main(["--config", "digits-tiny", "--out", str(tmp_path / "run"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_batch_size_must_divide_device_count():
    with pytest.raises(ValueError, match="divisible by the device count 3"):
        get_config("digits").replace(batch_size=128).validate(device_count=3)


def test_mnist_without_files_says_where_to_put_them(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("GAUSSJAX_DATA", raising=False)
    assert main(["--config", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "train-images-idx3-ubyte[.gz]" in capsys.readouterr().err


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["--config", "digits", "--steps", "123", "--lr", "3e-4", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["steps"] == 123 and resolved["lr"] == 3e-4 and resolved["name"] == "digits"
    assert CONFIGS["digits"].from_json(json.dumps(resolved)).steps == 123


def test_checkpoint_schedule_is_dense_early_sparse_late():
    steps = checkpoint_steps(get_config("digits"))
    assert steps[0] == 0 and steps[-1] == get_config("digits").steps
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert gaps == sorted(gaps) and gaps[0] < gaps[-1] / 10
    assert checkpoint_steps(get_config("digits").replace(steps=100, checkpoint_every=30)) == [0, 30, 60, 90, 100]
    mnist = checkpoint_steps(get_config("mnist"))
    assert len(mnist) >= 10 and mnist[1] <= 500
