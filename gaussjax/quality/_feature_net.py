"""`train_feature_net`: a small CNN classifier whose penultimate layer gives Frechet-distance features.

Why a feature net: the Frechet distance needs features in which sample quality shows.
Inception features do not fit small images (scikit-learn's 8x8 digits, MNIST), and
moments in pixel or PCA space are useless here, since a Gaussian model matches them by
construction. So gaussjax trains a small classifier on the dataset's train split and
uses its penultimate layer as features; the distance computed with them is called "FD"
(never "FID", which means Inception features).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import warnings
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from gaussjax._checks import as_float, check_key, check_positive_int, is_concrete
from gaussjax._orbax import without_read_only_notice
from gaussjax._pytree import Module
from gaussjax.nn._conv import conv2d

FORMAT_VERSION = 1
CONFIG_FILE = "feature_net.json"
PARAMS_DIR = "params"
EVAL_BATCH = 512  # images per forward pass when measuring the held-out accuracy
MAX_STAGES = 3


class FeatureCNN(nn.Module):
    """The feature net: conv stages, a feature layer and a linear classifier head.

    Each stage is `convs_per_stage` 3x3 convolutions (ReLU), followed by 2x2 average pooling
    except after the last stage. Then the last feature map is flattened (small images: its
    spatial layout matters more than translation invariance), a dense layer of `num_features`
    units with GELU gives the features, and a linear layer the `num_classes` logits.
    """

    widths: tuple[int, ...]
    num_features: int
    num_classes: int
    convs_per_stage: int = 1

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`images (B, H, W, C)` -> `(features (B, num_features), logits (B, num_classes))`."""
        x = images
        for stage, width in enumerate(self.widths):
            for i in range(self.convs_per_stage):
                kernel = self.param(f"conv{stage}_{i}", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], width))
                bias = self.param(f"conv{stage}_{i}_bias", nn.initializers.zeros, (width,))
                x = jax.nn.relu(conv2d(x, kernel, 1, "auto") + bias[None, None, None, :])
            if stage + 1 < len(self.widths):
                x = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        pooled = x.reshape(x.shape[0], -1)
        features = jax.nn.gelu(nn.Dense(self.num_features, name="features")(pooled))
        logits = nn.Dense(self.num_classes, name="classifier")(features)
        return features, logits


def default_widths(image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Channel widths per stage: one stage more for each halving of the image that leaves >= 4 pixels.

    8x8 -> (16, 32) (digits: cheap enough to train in seconds on a CPU); 28x28 (MNIST) and
    32x32 (CIFAR-10) -> (32, 64, 128) (at most 3 stages).
    """
    side, stages = min(image_shape[:2]), 1
    while side >= 8 and stages < MAX_STAGES:
        side //= 2
        stages += 1
    base = 16 if min(image_shape[:2]) <= 8 else 32
    return tuple(base * 2**i for i in range(stages))


class FeatureNet(Module):
    """A trained feature net (immutable; a JAX pytree whose leaves are the parameters).

    Attributes:
        module: the Flax module (architecture).
        params: its parameters, `{'params': ...}`.
        image_shape: `(H, W, C)` of the images it takes.
        classes: the class labels, in the order of the logits.
        accuracy: held-out classification accuracy in [0, 1], or `None` if there was no held-out data.
        accuracy_split: where `accuracy` was measured, `"<dataset name>/<split>"`, or `None`.
        dataset_name: the name of the dataset it was trained on.
    """

    params: dict
    module: FeatureCNN = eqx.field(static=True)
    image_shape: tuple[int, int, int] = eqx.field(static=True)
    classes: tuple[int, ...] = eqx.field(static=True)
    accuracy: float | None = eqx.field(static=True, default=None)
    accuracy_split: str | None = eqx.field(static=True, default=None)
    dataset_name: str = eqx.field(static=True, default="")

    @property
    def num_classes(self) -> int:
        """Number of classes (logits)."""
        return len(self.classes)

    @property
    def num_features(self) -> int:
        """Dimension of the features."""
        return self.module.num_features

    @property
    def feature_fn(self) -> Callable[[Float[Array, "B H W C"]], Float[Array, "B F"]]:
        """`features` as a plain function `feature_fn(images) -> (B, num_features)`."""
        return self.features

    def features(self, images: Float[Array, "B H W C"]) -> Float[Array, "B F"]:
        """Penultimate-layer features of a batch of images (jitted; call it batch by batch to stream).

        Args:
            images: float `(B, H, W, C)` in [-1, 1] with `(H, W, C) = image_shape`.

        Returns:
            float32 `(B, num_features)`.
        """
        return self._check_output(_features(self, self._check_images(images)))

    def logits(self, images: Float[Array, "B H W C"]) -> Float[Array, "B K"]:
        """Class logits of a batch of images, `(B, num_classes)` float32 (order of `classes`).

        Args:
            images: float `(B, H, W, C)` in [-1, 1] with `(H, W, C) = image_shape`.
        """
        return self._check_output(_logits(self, self._check_images(images)))

    def __call__(self, images: Float[Array, "B H W C"]) -> Float[Array, "B F"]:
        """Same as `features`."""
        return self.features(images)

    def _check_images(self, images):
        images = as_float("images", images)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"`images` must have shape (B, H, W, C) with (H, W, C) = {tuple(self.image_shape)} (the images "
                f"this feature net was trained on), got {images.shape}"
            )
        return images.astype(jnp.float32)

    @staticmethod
    def _check_output(out):
        if is_concrete(out) and not np.all(np.isfinite(np.asarray(out))):
            raise ValueError("`images` gives NaN or infinite outputs: does it contain NaN or infinite values?")
        return out

    def __repr__(self) -> str:
        acc = "no held-out accuracy" if self.accuracy is None else f"accuracy={self.accuracy:.4f} on {self.accuracy_split}"
        return (f"FeatureNet(dataset={self.dataset_name!r}, image_shape={tuple(self.image_shape)}, "
                f"num_features={self.num_features}, num_classes={self.num_classes}, {acc})")


# Jitted on (module, params, images) only: the metadata (accuracy, names) must not trigger recompilation.
@functools.partial(jax.jit, static_argnums=0)
def _apply(module: FeatureCNN, params, images):
    return module.apply(params, images)


def _features(net: FeatureNet, images):
    return _apply(net.module, net.params, images)[0]


def _logits(net: FeatureNet, images):
    return _apply(net.module, net.params, images)[1]


def _check_positive_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
    return float(value)


def _check_labelled(name: str, dataset, what: str):
    if not (hasattr(dataset, "images") and hasattr(dataset, "labels")):
        raise TypeError(f"`{name}` must be a gaussjax.data.Dataset, got {type(dataset).__name__}")
    if dataset.labels is None:
        raise ValueError(
            f"`{name}` ({getattr(dataset, 'name', '?')!r}) has no labels: {what} needs class labels. For "
            "unlabelled data, compute the distance with Inception features instead (pass Inception weights)"
        )
    images = np.asarray(dataset.images)
    if images.ndim != 4 or min(images.shape) < 1:
        raise ValueError(f"`{name}.images` must have shape (N, H, W, C) with N, H, W, C >= 1, got {images.shape}")
    return images, np.asarray(dataset.labels)


def _held_out(dataset, test):
    """The held-out `(images, labels, description)`, or `None` when the dataset has no test split."""
    if test is not None:
        images, labels = _check_labelled("test", test, "measuring the held-out accuracy")
        return images, labels, f"{test.name}/{test.split}"
    if dataset.split == "test":
        return None
    from gaussjax.data._load import DATASETS, WITHOUT_SPLIT, load_dataset

    if dataset.name not in DATASETS or dataset.name in WITHOUT_SPLIT:
        return None
    try:
        held = load_dataset(dataset.name, split="test")
    except (OSError, ValueError, TypeError) as error:
        warnings.warn(f"no held-out accuracy: the test split of {dataset.name!r} could not be loaded ({error}); "
                      "pass it as `test=`", stacklevel=3)
        return None
    if held.labels is None or held.image_shape != dataset.image_shape:
        return None
    return np.asarray(held.images), np.asarray(held.labels), f"{held.name}/{held.split}"


ADAM = optax.scale_by_adam()  # Adam's direction; the cosine-decayed learning rate is applied in the step


@functools.lru_cache(maxsize=8)  # one compilation per (module, batch_size): steps and learning rate are traced
def _train_loop(module: FeatureCNN, batch_size: int):
    """A jitted `run(params, opt_state, images, labels, key, start, stop, steps, learning_rate)`: steps start..stop-1.

    Step `i` uses the minibatch drawn with `fold_in(key, i)` and the learning rate
    `learning_rate * (1 + cos(pi * i / steps)) / 2`, so the result does not depend on the chunking.
    """

    def loss_fn(params, images, labels):
        logits = module.apply(params, images)[1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def run(params, opt_state, images, labels, key, start, stop, steps, learning_rate):
        def step(i, carry):
            params, opt_state = carry
            index = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, images.shape[0])
            grads = jax.grad(loss_fn)(params, images[index], labels[index])
            direction, opt_state = ADAM.update(grads, opt_state)
            rate = learning_rate * 0.5 * (1 + jnp.cos(jnp.pi * i.astype(jnp.float32) / steps))
            return jax.tree_util.tree_map(lambda p, d: p - rate * d, params, direction), opt_state

        return jax.lax.fori_loop(start, stop, step, (params, opt_state))

    return run


def train_feature_net(
    dataset,
    key,
    *,
    num_features: int = 64,
    steps: int = 500,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    widths: tuple[int, ...] | None = None,
    test=None,
    progress: bool = True,
) -> FeatureNet:
    """Train a small CNN classifier on a labelled dataset; its penultimate layer gives features for the FD.

    The Frechet distance needs features in which sample quality shows. For small images
    (8x8 digits, MNIST) there are no Inception features, and pixel- or PCA-space moments are
    useless (a Gaussian model matches them by construction), so gaussjax trains this small
    classifier on the train split and uses its penultimate layer as features. The distance
    computed with them is called "FD", never "FID".

    The network: `len(widths)` stages of a 3x3 convolution (ReLU) with 2x2 average pooling
    between stages, the last feature map flattened, a dense layer of `num_features` units (GELU:
    the features) and a linear classifier head, trained with Adam (cosine-decayed learning rate) on
    minibatches drawn with replacement. Digits (1,442 8x8 images) train in seconds on a CPU to
    about 96-97% held-out accuracy; MNIST-sized data needs more `steps` (a few thousand) for ~99%.

    Args:
        dataset: a labelled `gaussjax.data.Dataset` (its `.images (N, H, W, C)` in [-1, 1] and
            `.labels (N,)`, at least 2 classes), usually the train split.
        key: PRNG key (initialisation and minibatches); the result is deterministic given it.
        num_features: dimension of the features.
        steps: number of Adam steps.
        batch_size: images per step.
        learning_rate: peak learning rate (cosine decay to 0 over `steps`).
        widths: channels per stage; default by image size (`(16, 32)` for 8x8, `(32, 64)`
            below 16x16, `(32, 64, 128)` from 16x16 up: MNIST, CIFAR-10).
        test: a labelled `Dataset` to measure the held-out accuracy on; default the test split
            of `dataset.name` (`load_dataset(dataset.name, split="test")`) where one exists.
        progress: show a tqdm progress bar.

    Returns:
        A `FeatureNet`: `.features(images) -> (B, num_features)`, `.logits(images)`,
        `.accuracy` (on `.accuracy_split`, or `None` without held-out data).

    Example:
        >>> from gaussjax.data import load_dataset
        >>> net = train_feature_net(load_dataset("digits"), jax.random.key(0), progress=False)
        >>> net.accuracy > 0.95, net.features(load_dataset("digits", split="test").images).shape
        (True, (355, 64))
    """
    images, labels = _check_labelled("dataset", dataset, "the feature net")
    key = check_key(key)
    num_features = check_positive_int("num_features", num_features)
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    learning_rate = _check_positive_real("learning_rate", learning_rate)
    image_shape = tuple(int(s) for s in images.shape[1:])
    if widths is None:
        widths = default_widths(image_shape)
    else:
        widths = tuple(check_positive_int("widths", w) for w in widths)
        if not widths:
            raise ValueError("`widths` must hold at least one stage width")
    if not np.all(np.isfinite(images)):
        raise ValueError("`dataset.images` contains NaN or infinite values")
    classes, targets = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"`dataset` must have at least 2 classes to train a classifier, got {len(classes)} "
                         f"(labels {classes.tolist()})")
    held_out = _held_out(dataset, test)
    if held_out is not None:
        test_images, test_labels, accuracy_split = held_out
        if tuple(test_images.shape[1:]) != image_shape:
            raise ValueError(f"`test` images must have shape (N, {', '.join(map(str, image_shape))}) like the "
                             f"dataset's, got {test_images.shape}")
        unknown = np.setdiff1d(test_labels, classes)
        if unknown.size:
            raise ValueError(f"`test` has labels the dataset lacks: {unknown[:10].tolist()}")

    module = FeatureCNN(widths=widths, num_features=num_features, num_classes=len(classes))
    init_key, data_key = jax.random.split(key)
    params = module.init(init_key, jnp.zeros((1, *image_shape), jnp.float32))
    opt_state = ADAM.init(params)
    run = _train_loop(module, batch_size)
    device_images, device_labels = jnp.asarray(images, jnp.float32), jnp.asarray(targets, jnp.int32)

    from tqdm.auto import tqdm

    chunk = max(1, min(100, steps // 20))
    with tqdm(total=steps, desc=f"feature net ({dataset.name})", disable=not progress, unit="step") as bar:
        for start in range(0, steps, chunk):
            stop = min(start + chunk, steps)
            params, opt_state = run(params, opt_state, device_images, device_labels, data_key, jnp.int32(start),
                                    jnp.int32(stop), jnp.float32(steps), jnp.float32(learning_rate))
            jax.block_until_ready(params)
            bar.update(stop - start)

    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
    net = FeatureNet(params=params, module=module, image_shape=image_shape,
                     classes=tuple(int(c) for c in classes), dataset_name=str(dataset.name))
    if held_out is None:
        return net
    predicted = np.concatenate([np.asarray(net.logits(test_images[i:i + EVAL_BATCH])).argmax(axis=1)
                                for i in range(0, len(test_images), EVAL_BATCH)])
    accuracy = float(np.mean(classes[predicted] == test_labels))
    return dataclasses.replace(net, accuracy=accuracy, accuracy_split=accuracy_split)


def _config(net: FeatureNet) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "architecture": {"widths": list(net.module.widths), "num_features": net.module.num_features,
                         "num_classes": net.module.num_classes, "convs_per_stage": net.module.convs_per_stage},
        "image_shape": list(net.image_shape),
        "classes": list(net.classes),
        "accuracy": net.accuracy,
        "accuracy_split": net.accuracy_split,
        "dataset_name": net.dataset_name,
    }


def save_feature_net(net: FeatureNet, path) -> Path:
    """Save a `FeatureNet` to the new directory `path`: parameters with Orbax, the rest as JSON.

    Args:
        net: the feature net.
        path: a directory that does not exist yet (or is empty).

    Returns:
        The absolute path written.

    Example:
        >>> save_feature_net(net, "digits_feature_net")  # doctest: +SKIP
        >>> load_feature_net("digits_feature_net").accuracy == net.accuracy  # doctest: +SKIP
        True
    """
    import orbax.checkpoint as ocp

    if not isinstance(net, FeatureNet):
        raise TypeError(f"`net` must be a FeatureNet, got {type(net).__name__}")
    path = Path(path).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"`path` {path} already exists and is not an empty directory")
    path.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(np.asarray, net.params)
    with without_read_only_notice(), ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path / PARAMS_DIR, params)
        checkpointer.wait_until_finished()
    (path / CONFIG_FILE).write_text(json.dumps(_config(net), indent=2) + "\n")
    return path


def load_feature_net(path) -> FeatureNet:
    """Load a `FeatureNet` written by `save_feature_net` (prints nothing; features are bitwise identical).

    Args:
        path: the directory given to `save_feature_net`.

    Returns:
        The `FeatureNet`.
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"`path` {path} holds no feature net ({CONFIG_FILE} is missing)")
    try:
        config = json.loads(config_file.read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unknown format_version {config.get('format_version')!r}")
        arch = config["architecture"]
        module = FeatureCNN(widths=tuple(int(w) for w in arch["widths"]), num_features=int(arch["num_features"]),
                            num_classes=int(arch["num_classes"]), convs_per_stage=int(arch["convs_per_stage"]))
        image_shape = tuple(int(s) for s in config["image_shape"])
        classes = tuple(int(c) for c in config["classes"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"`path` {config_file} is not a valid feature-net config: {error}") from None
    like = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    abstract = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), like)
    with without_read_only_notice(), ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(path / PARAMS_DIR, abstract)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return FeatureNet(params=params, module=module, image_shape=image_shape, classes=classes,
                      accuracy=config["accuracy"], accuracy_split=config["accuracy_split"],
                      dataset_name=config["dataset_name"])


__all__ = ["FeatureCNN", "FeatureNet", "load_feature_net", "save_feature_net", "train_feature_net"]
