import json
import re

import pytest

from gaussjax.runs import NetworkConfig, TrainConfig, load_denoiser
from train.__main__ import main
from train.checkpoints import checkpoint_steps
from train.configs import CONFIGS, get_config
from train.run import check_run_dir, train

# What runs written before `NetworkConfig` hold (digits-tiny): network.json, and config.json's `network`.
OLD_NETWORK_JSON = """{
  "img_resolution": 8,
  "in_channels": 1,
  "out_channels": 1,
  "label_dim": 0,
  "model_channels": 8,
  "channel_mult": [
    1,
    2
  ],
  "num_blocks": 1,
  "attn_resolutions": [],
  "dropout": 0.0
}"""
OLD_CONFIG_NETWORK = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [],
                      "dropout": 0.0}


def test_unknown_config_lists_known_ones(capsys):
    with pytest.raises(ValueError, match="known configs: digits, patches, mnist, cifar10"):
        get_config("imagenet")
    assert main(["--config", "imagenet", "--dry-run"]) == 2
    assert "known configs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "`steps` must be a positive integer"),
        (["--lr=-1e-3"], "`lr` must be a finite number > 0, got -0.001"),
        (["--lr", "inf"], "`lr` must be a finite number > 0, got inf"),
        (["--lr", "nan"], "`lr` must be a finite number > 0, got nan"),
        (["--batch-size", "0"], "`batch_size` must be a positive integer"),
        (["--checkpoint-every", "0"], "`checkpoint_every` must be a positive integer"),
    ],
)
def test_invalid_values_are_refused_before_work(argv, message, capsys, tmp_path):
    assert main(["--config", "digits-tiny", "--out", str(tmp_path / "run"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "out, argv, message",
    [
        ("file", [], "run directory {out} exists and is not a directory; choose another --out"),
        ("file/sub", [], "run directory {out} cannot be created: {tmp}/file is not a directory"),
        ("run", ["--seed", "100000000000000000000000"], "`seed` must be an integer in [0, 4294967295], got 1000"),
    ],
)
def test_an_unusable_out_or_seed_is_one_error_line_before_work(out, argv, message, capsys, tmp_path):
    (tmp_path / "file").write_text("")
    out = tmp_path / out
    assert main(["--config", "digits-tiny", "--no-progress", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message.format(out=out, tmp=tmp_path)}") and err.count("\n") == 1
    assert [path.name for path in tmp_path.iterdir()] == ["file"]
    assert (tmp_path / "file").read_text() == ""


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
    gaps = [b - a for a, b in zip(steps[1:], steps[2:], strict=False)]
    assert gaps == sorted(gaps) and gaps[0] < gaps[-1] / 10
    assert checkpoint_steps(get_config("digits").replace(steps=100, checkpoint_every=30)) == [0, 30, 60, 90, 100]
    mnist = checkpoint_steps(get_config("mnist"))
    assert len(mnist) >= 10 and mnist[1] <= 500


@pytest.mark.parametrize(
    "fields, error, message",
    [
        ({"dropout": 1.5}, ValueError, "`NetworkConfig.dropout` must be a probability"),
        ({"channel_mult": (1, 0)}, ValueError, r"`NetworkConfig.channel_mult\[1\]` must be a positive integer"),
        ({"channel_mult": (1, 2), "img_resolution": 7}, ValueError, r"`NetworkConfig.img_resolution` \(7\) must be "
         "divisible"),
        ({"channel_mult": ()}, TypeError, "`NetworkConfig.channel_mult` must be a non-empty tuple"),
        ({"model_channels": 2.5}, TypeError, "`NetworkConfig.model_channels` must be an integer"),
        ({"num_blocks": -1}, ValueError, "`NetworkConfig.num_blocks` must be >= 0"),
        ({"img_resolution": 0}, ValueError, "`NetworkConfig.img_resolution` must be a positive integer"),
    ],
)
def test_network_config_names_the_bad_field(fields, error, message):
    with pytest.raises(error, match=message):
        NetworkConfig(**fields)


def test_network_config_refuses_unknown_and_data_fields():
    with pytest.raises(ValueError, match="unknown NetworkConfig field.*: depth"):
        NetworkConfig.from_dict({"model_channels": 8, "depth": 3})
    with pytest.raises(ValueError, match="`network.img_resolution` must be left unset"):
        get_config("digits").replace(network=NetworkConfig(img_resolution=8))
    with pytest.raises(ValueError, match="call `for_images` first"):
        NetworkConfig().kwargs()


def test_network_config_reads_and_writes_the_files_of_existing_runs(tmp_path):
    config = get_config("digits-tiny")
    network = NetworkConfig.from_json(OLD_NETWORK_JSON)
    assert network == config.network.for_images((8, 8, 1))
    assert network.channel_mult == (1, 2) and network.attn_resolutions == ()  # tuples, as Flax modules hash
    assert network.to_json() == OLD_NETWORK_JSON
    assert json.loads(config.to_json())["network"] == OLD_CONFIG_NETWORK
    old = dict(json.loads(config.to_json()), network=OLD_CONFIG_NETWORK, steps=1000)
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_run_dir(tmp_path, config)  # accepted: only `steps` differs
    assert TrainConfig.from_json(json.dumps(old)) == config.replace(steps=1000)
    with pytest.raises(ValueError, match="differs in: network"):
        check_run_dir(tmp_path, config.replace(network=NetworkConfig(model_channels=16, channel_mult=(1, 2))))


def test_every_config_builds_its_network():
    from gaussjax.nn import SongUNet

    for config in CONFIGS.values():
        net = SongUNet(**config.network.for_images((32, 32, 3)).kwargs())
        assert (net.model_channels, net.dropout) == (config.network.model_channels, config.network.dropout)


@pytest.mark.parametrize(
    "file, edit, error, message",
    [
        ("config.json", {"steps": "abc"}, TypeError, r"`steps` must be an integer, got str 'abc'"),
        ("config.json", {"sigma_data": -0.5}, ValueError, r"`sigma_data` must be a finite number > 0, got -0\.5"),
        ("config.json", {"lr": float("nan")}, ValueError, r"`lr` must be a finite number > 0, got nan"),
        ("config.json", {"depth": 3}, ValueError, r"unknown TrainConfig field\(s\): depth"),
        ("config.json", {"probe_local": ["els4"]}, ValueError,
         r"`probe_local`: local model 'els4': the window size k must be odd"),
        ("config.json", "{\"steps\": 60,", ValueError, r" is not valid JSON: "),
        ("network.json", {"model_channels": "8"}, TypeError, r"`NetworkConfig.model_channels` must be an integer"),
        ("network.json", {"img_resolution": None}, ValueError, r"missing field\(s\): img_resolution"),
        ("network.json", {"model_channels": 16}, ValueError,
         r"differs from the network of .*config\.json in: model_channels"),
        ("network.json", "[]", TypeError, r"it must hold a JSON object, got list"),
    ],
)
def test_a_tampered_run_file_is_refused_naming_file_and_field(file, edit, error, message, tmp_path):
    """load_denoiser and a resumed run validate config.json (and load_denoiser network.json) like a config."""
    config = get_config("digits-tiny")
    texts = {"config.json": config.to_json(), "network.json": config.network.for_images((8, 8, 1)).to_json()}
    texts[file] = edit if isinstance(edit, str) else json.dumps(dict(json.loads(texts[file]), **edit))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, text in texts.items():
        (run_dir / name).write_text(text)
    pattern = re.escape(str(run_dir / file)) + ".*" + message
    with pytest.raises(error, match=pattern):
        load_denoiser(run_dir)
    if file == "config.json":
        with pytest.raises(error, match=pattern):
            train(config, run_dir, progress=False, log=lambda *a: None)
        assert (run_dir / file).read_text() == texts[file]  # refused, not overwritten


def test_a_bug_is_not_reported_as_a_usage_error(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise KeyError("internal")
    monkeypatch.setattr("train.run.train", broken)
    with pytest.raises(KeyError, match="internal"):
        main(["--config", "digits-tiny", "--out", str(tmp_path / "run"), "--no-progress"])
