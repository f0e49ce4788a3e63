"""`train_feature_net`: a small CNN classifier on digits whose penultimate features give the FD.

The network is trained once per module; every accuracy here is recomputed independently in
NumPy from the logits or the features, and the optimiser's learning rates from the formula the
docstring states.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.data import load_dataset
from gaussjax.data._dataset import Dataset
from gaussjax.quality._feature_net import (
    FeatureNet,
    _optimizer,
    default_widths,
    load_feature_net,
    save_feature_net,
    train_feature_net,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits"), load_dataset("digits", split="test")


@pytest.fixture(scope="module")
def net(digits):
    # Under the same rank-promotion setting as the tests (conftest's autouse fixture is function-scoped),
    # so that the tests reuse the compiled programs (the setting is part of JAX's compilation cache key).
    with jax.numpy_rank_promotion("raise"):
        return train_feature_net(digits[0], jax.random.key(0), test=digits[1], progress=False)


@pytest.mark.slow
def test_held_out_accuracy_is_measured_and_stored(net, digits):
    _, test = digits
    predicted = np.asarray(net.logits(test.images)).argmax(axis=1)
    accuracy = np.mean(np.asarray(net.classes)[predicted] == test.labels)
    assert accuracy >= 0.95
    assert net.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert net.accuracy_split == "digits/test"
    assert net.num_classes == 10 and net.image_shape == (8, 8, 1) and net.dataset_name == "digits"


@pytest.mark.slow
def test_features_are_informative(net, digits):
    train, test = digits
    train_features, test_features = np.asarray(net.features(train.images)), np.asarray(net.feature_fn(test.images))
    assert train_features.shape == (len(train), 64) and train_features.dtype == np.float32
    assert train_features.std(axis=0).max() > 1e-2 and np.linalg.matrix_rank(train_features) >= 10
    # Nearest class mean (fit on the train features) classifies the held-out images.
    means = np.stack([train_features[train.labels == c].mean(axis=0) for c in range(10)])
    distances = ((test_features[:, None, :] - means[None, :, :]) ** 2).sum(axis=-1)
    assert np.mean(distances.argmin(axis=1) == test.labels) >= 0.90


def test_features_stream_batch_by_batch(net, digits):
    images = digits[1].images[:100]
    whole = np.asarray(net.features(images))
    parts = np.concatenate([np.asarray(net.features(images[i:i + 30])) for i in range(0, 100, 30)])
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-5)
    jitted = jax.jit(net.features)(jnp.asarray(images))  # usable inside jit too
    np.testing.assert_allclose(np.asarray(jitted), whole, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_is_bitwise_and_silent(net, digits, tmp_path, capfd):
    images = digits[1].images
    capfd.readouterr()
    save_feature_net(net, tmp_path / "net")
    capfd.readouterr()
    loaded = load_feature_net(tmp_path / "net")
    features = np.asarray(loaded.features(images))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert isinstance(loaded, FeatureNet)
    np.testing.assert_array_equal(features, np.asarray(net.features(images)))
    assert (loaded.accuracy, loaded.accuracy_split, loaded.classes, loaded.image_shape, loaded.dataset_name) == (
        net.accuracy, net.accuracy_split, net.classes, net.image_shape, net.dataset_name)
    with pytest.raises(ValueError, match="path"):
        save_feature_net(net, tmp_path / "net")


def test_same_key_same_params_and_labels_need_not_be_contiguous(digits):
    # A 5-step training with the fixture's architecture (10 classes, 64 features, same batch size):
    # cheap, as it reuses the compiled training loop. Labels 5..14 exercise the class mapping.
    train, test = digits
    shifted = Dataset("toy", train.images, train.labels + 5, "train")
    a, b, c = (train_feature_net(shifted, jax.random.key(k), steps=5, progress=False) for k in (3, 3, 4))
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(x, y) for x, y in zip(leaves(a.params), leaves(b.params), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves(a.params), leaves(c.params), strict=True))
    assert a.classes == tuple(range(5, 15)) and a.logits(test.images).shape == (len(test), 10)
    assert a.accuracy is None and a.accuracy_split is None  # no `test`: no accuracy
    held = Dataset("toy", test.images, test.labels + 5, "test")
    d = train_feature_net(shifted, jax.random.key(3), steps=5, test=held, progress=False)
    assert d.accuracy_split == "toy/test"
    predicted = np.asarray(d.classes)[np.asarray(d.logits(held.images)).argmax(axis=1)]
    assert d.accuracy == pytest.approx(np.mean(predicted == held.labels), abs=1e-12)


def test_errors_name_the_argument(net, digits):
    train = digits[0]
    unlabelled = Dataset("pictures", train.images[:20], None)
    with pytest.raises(ValueError, match="(?s)`dataset`.*no labels.*Inception"):
        train_feature_net(unlabelled, jax.random.key(0), progress=False)
    one_class = Dataset("ones", train.images[:20], np.ones(20, dtype=np.int64))
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_feature_net(one_class, jax.random.key(0), progress=False)
    for bad in (0, -3, 2.5, True):
        with pytest.raises((TypeError, ValueError), match="num_features"):
            train_feature_net(train, jax.random.key(0), num_features=bad, progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        train_feature_net(train, jax.random.key(0), learning_rate=-1.0, progress=False)
    with pytest.raises(TypeError, match="key"):
        train_feature_net(train, None, progress=False)
    with pytest.raises(ValueError, match="`test` has labels"):
        toy = Dataset("toy", train.images[:20], train.labels[:20] % 2)
        train_feature_net(toy, jax.random.key(0), test=train, progress=False)
    with pytest.raises(ValueError, match=r"`images`.*\(8, 8, 1\)"):
        net.features(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="`images`"):
        net.logits(np.zeros((8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="`images`.*NaN"):
        net.features(np.full((1, 8, 8, 1), np.nan, np.float32))


def test_more_errors_are_input_errors_naming_the_argument(digits):
    train, test = digits
    labels = train.labels[:20]
    nan_images = np.array(train.images[:20])
    nan_images[3, 2, 1, 0] = np.nan
    cases = [
        (dict(dataset=Dataset("nan", nan_images, labels)), InputValueError, "`dataset.images`.*NaN"),
        (dict(test=Dataset("small", np.zeros((4, 4, 4, 1), np.float32), labels[:4])), InputValueError,
         r"`test` images must have shape \(N, 8, 8, 1\)"),
        (dict(test=test.images), InputTypeError, "`test` must be a gaussjax.data.Dataset"),
        (dict(test=Dataset("unlabelled", test.images, None)), InputValueError, "(?s)`test`.*no labels"),
        (dict(widths=()), InputValueError, "`widths` must hold at least one"),
        (dict(widths="16"), InputTypeError, "`widths` must be a sequence"),
        (dict(widths=(8, 0)), InputValueError, "`widths`"),
        (dict(steps=0), InputValueError, "`steps`"),
        (dict(batch_size=1.5), InputTypeError, "`batch_size`"),
        (dict(learning_rate=float("nan")), InputValueError, "`learning_rate`"),
    ]
    for options, error, message in cases:
        arguments = dict(dataset=train, key=jax.random.key(0), progress=False) | options
        with pytest.raises(error, match=message):
            train_feature_net(arguments.pop("dataset"), arguments.pop("key"), **arguments)


def test_without_test_there_is_no_accuracy_and_nothing_is_looked_up(digits):
    # digits has a test split, but the held-out set is the caller's to pass: none, no accuracy.
    # (The architecture and steps of the 5-step trainings above: the compiled step is reused.)
    net = train_feature_net(digits[0], jax.random.key(1), steps=5, progress=False)
    assert net.accuracy is None and net.accuracy_split is None and net.dataset_name == "digits"


def test_optimizer_is_adam_with_the_documented_cosine_decay():
    # With a constant gradient g, Adam's bias-corrected moments are g and g^2, so step i moves a
    # parameter by -rate_i g / (|g| + eps): the learning rate of step i, lr (1 + cos(pi i / steps)) / 2.
    lr, steps, eps = 0.25, 7, 1e-8
    optimizer = _optimizer(lr, steps)
    assert _optimizer(lr, steps) is optimizer  # cached: one compilation of the training step per setting
    state = optimizer.init({"w": jnp.zeros(())})
    gradient = {"w": jnp.asarray(2.0)}
    moves = []
    for _ in range(steps + 1):
        updates, state = optimizer.update(gradient, state)
        moves.append(float(updates["w"]))
    expected = [-lr * (1 + np.cos(np.pi * i / steps)) / 2 * 2.0 / (2.0 + eps) for i in range(steps + 1)]
    np.testing.assert_allclose(moves, expected, rtol=3e-5, atol=1e-9)  # float32 bias corrections
    assert moves[-1] == 0.0  # decayed to 0 at `steps`


def test_default_widths():
    assert [default_widths((s, s, 1)) for s in (4, 8, 12, 16, 28, 32)] == [
        (16,), (16, 32), (32, 64), (32, 64, 128), (32, 64, 128), (32, 64, 128)]
