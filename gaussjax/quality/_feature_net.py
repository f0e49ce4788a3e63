"""`train_feature_net`: a small CNN classifier whose penultimate layer gives Frechet-distance features.

Why a feature net: the Frechet distance needs features in which sample quality shows.
Inception features do not fit small images (scikit-learn's 8x8 digits, MNIST), and
moments in pixel or PCA space are useless here, since a Gaussian model matches them by
construction. So gaussjax trains a small classifier on the dataset (usually its train
split) and uses its penultimate layer as features; the distance computed with them is
called "FD" (never "FID", which means Inception features).

The pieces of `train_feature_net`: `_labelled_images`, `_check_widths` and `_check_held_out`
(checks), `_optimizer` (optax's Adam with a cosine-decayed learning rate), `_initial_state`
and `_train_step` (jitted) and `_accuracy` (evaluation on the held-out set the caller passes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import check_images, check_int, check_key, check_real, is_concrete
from gaussjax._errors import InputFileNotFoundError, InputTypeError, InputValueError
from gaussjax._orbax import without_read_only_notice
from gaussjax._pytree import Module
from gaussjax.nn._conv import conv2d

if TYPE_CHECKING:
    import optax

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

    At most 3 stages; the first has 16 channels for images of side <= 8, else 32, and each
    next one doubles: 8x8 -> (16, 32); 12x12 -> (32, 64); 28x28 (MNIST) and 32x32 (CIFAR-10)
    -> (32, 64, 128).
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
    def feature_fn(self) -> Callable[[Float[ArrayLike, "B H W C"]], Float[Array, "B F"]]:
        """`features` as a plain function `feature_fn(images) -> (B, num_features)`."""
        return self.features

    def features(self, images: Float[ArrayLike, "B H W C"]) -> Float[Array, "B F"]:
        """Penultimate-layer features of a batch of images (jitted; call it batch by batch to stream).

        Args:
            images: finite float `(B, H, W, C)` in [-1, 1], `B >= 1`, with `(H, W, C) = image_shape`.

        Returns:
            float32 `(B, num_features)`.

        Raises:
            InputValueError: `images` of another shape, or with NaN or infinite values (when concrete).
        """
        return self._check_output(_features(self, self._check_images(images)))

    def logits(self, images: Float[ArrayLike, "B H W C"]) -> Float[Array, "B K"]:
        """Class logits of a batch of images, `(B, num_classes)` float32 (order of `classes`).

        Args:
            images: finite float `(B, H, W, C)` in [-1, 1], `B >= 1`, with `(H, W, C) = image_shape`.
        """
        return self._check_output(_logits(self, self._check_images(images)))

    def __call__(self, images: Float[ArrayLike, "B H W C"]) -> Float[Array, "B F"]:
        """Same as `features`."""
        return self.features(images)

    def _check_images(self, images):
        """`gaussjax._checks.check_images`, then `(H, W, C) = image_shape`; float32."""
        images = check_images("images", images)
        if tuple(images.shape[1:]) != tuple(self.image_shape):
            raise InputValueError(
                f"`images` must have shape (B, H, W, C) with (H, W, C) = {tuple(self.image_shape)} (the images "
                f"this feature net was trained on), got {images.shape}"
            )
        return images.astype(jnp.float32)

    @staticmethod
    def _check_output(out):
        if is_concrete(out) and not np.all(np.isfinite(np.asarray(out))):
            raise InputValueError("`images` gives NaN or infinite outputs: does it contain NaN or infinite values?")
        return out

    def __repr__(self) -> str:
        acc = ("no held-out accuracy" if self.accuracy is None
               else f"accuracy={self.accuracy:.4f} on {self.accuracy_split}")
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


def _labelled_images(name: str, dataset, what: str) -> tuple[jax.Array, np.ndarray]:
    """`(images (N, H, W, C) float32, labels (N,))` of a labelled `Dataset`; errors name `name`.

    The images pass `gaussjax._checks.check_images` (finite, no empty axis).
    """
    if not (hasattr(dataset, "images") and hasattr(dataset, "labels")):
        raise InputTypeError(f"`{name}` must be a gaussjax.data.Dataset, got {type(dataset).__name__}")
    if dataset.labels is None:
        raise InputValueError(
            f"`{name}` ({getattr(dataset, 'name', '?')!r}) has no labels: {what} needs class labels. For "
            "unlabelled data, compute the distance with Inception features instead (pass Inception weights)"
        )
    images = check_images(f"{name}.images", dataset.images).astype(jnp.float32)
    labels = np.asarray(dataset.labels)
    if labels.shape != images.shape[:1]:
        raise InputValueError(f"`{name}.labels` must have shape ({images.shape[0]},) like its images, "
                              f"got {labels.shape}")
    return images, labels


def _check_widths(widths, image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """`widths` as a non-empty tuple of positive ints; `default_widths(image_shape)` for `None`."""
    if widths is None:
        return default_widths(image_shape)
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Iterable):
        raise InputTypeError(f"`widths` must be a sequence of positive integers, got {type(widths).__name__}")
    widths = tuple(check_int("widths", w, minimum=1) for w in widths)
    if not widths:
        raise InputValueError("`widths` must hold at least one stage width")
    return widths


def _check_held_out(test, image_shape: tuple[int, int, int], classes: np.ndarray):
    """`(images, labels, "<name>/<split>")` of the held-out `test` set, or `None` when `test` is `None`."""
    if test is None:
        return None
    images, labels = _labelled_images("test", test, "measuring the held-out accuracy")
    if tuple(images.shape[1:]) != image_shape:
        raise InputValueError(f"`test` images must have shape (N, {', '.join(map(str, image_shape))}) like the "
                              f"dataset's, got {images.shape}")
    unknown = np.setdiff1d(labels, classes)
    if unknown.size:
        raise InputValueError(f"`test` has labels the dataset lacks: {unknown[:10].tolist()}")
    return images, labels, f"{getattr(test, 'name', '?')}/{getattr(test, 'split', '?')}"


@functools.lru_cache(maxsize=8)  # equal settings, the same object: `_train_step` compiles once for them
def _optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """`optax.adam(optax.cosine_decay_schedule(learning_rate, steps))`: Adam, learning rate decayed to 0."""
    import optax

    return optax.adam(optax.cosine_decay_schedule(learning_rate, steps))


@functools.partial(jax.jit, static_argnames=("module", "optimizer", "image_shape"))
def _initial_state(key, *, module: FeatureCNN, optimizer: optax.GradientTransformation,
                   image_shape: tuple[int, int, int]):
    """`(params, opt_state)` before the first step: `module` initialised with `key`, and `optimizer`'s state."""
    params = module.init(key, jnp.zeros((1, *image_shape), jnp.float32))
    return params, optimizer.init(params)


@functools.partial(jax.jit, static_argnames=("module", "optimizer", "batch_size"))
def _train_step(params, opt_state, images, labels, key, step, *, module: FeatureCNN,
                optimizer: optax.GradientTransformation, batch_size: int):
    """One `optimizer` step on the mean cross-entropy of a minibatch; returns the new `(params, opt_state)`.

    The minibatch is `batch_size` rows drawn with replacement by `fold_in(key, step)`: it
    depends only on `(key, step)`.
    """
    import optax

    index = jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, images.shape[0])

    def loss(params):
        logits = module.apply(params, images[index])[1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels[index]).mean()

    updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _accuracy(net: FeatureNet, images: jax.Array, labels: np.ndarray) -> float:
    """Fraction of `images` whose predicted class (`net.classes[argmax logits]`) equals `labels`."""
    host = np.asarray(images)  # sliced on the host: no compilation per batch shape
    predicted = np.concatenate([np.asarray(net.logits(host[i:i + EVAL_BATCH])).argmax(axis=1)
                                for i in range(0, len(host), EVAL_BATCH)])
    return float(np.mean(np.asarray(net.classes)[predicted] == labels))


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
    classifier and uses its penultimate layer as features. The distance computed with them is
    called "FD", never "FID".

    The network is `FeatureCNN`: `len(widths)` stages of 3x3 convolutions (ReLU) with 2x2
    average pooling between stages, the last feature map flattened, a dense layer of
    `num_features` units (GELU: the features) and a linear classifier head. Training minimises
    the mean softmax cross-entropy over `steps` minibatches of `batch_size` images drawn with
    replacement (step `i` draws with `fold_in(data_key, i)`), with
    `optax.adam(optax.cosine_decay_schedule(learning_rate, steps))`: Adam (`b1 = 0.9`,
    `b2 = 0.999`, `eps = 1e-8`) at the learning rate `learning_rate (1 + cos(pi i / steps)) / 2`
    at step `i`. The held-out accuracy is measured on `test` only: nothing is loaded here.

    Args:
        dataset: a labelled `gaussjax.data.Dataset` (its `.images (N, H, W, C)` in [-1, 1],
            finite, and `.labels (N,)`, at least 2 classes), usually the train split.
        key: PRNG key (initialisation and minibatches); the result is deterministic given it.
        num_features: dimension of the features, >= 1.
        steps: number of Adam steps, >= 1.
        batch_size: images per step, >= 1.
        learning_rate: peak learning rate, > 0 (cosine decay to 0 over `steps`).
        widths: channels per stage, positive ints; default `default_widths(image_shape)`
            (`(16, 32)` for 8x8, `(32, 64)` below 16x16, `(32, 64, 128)` from 16x16 up).
        test: a labelled `Dataset` of held-out images of the same `(H, W, C)`, whose labels
            are among the dataset's, to measure the accuracy on (e.g.
            `load_dataset(name, split="test")`); `None`: no accuracy.
        progress: show a tqdm progress bar.

    Returns:
        A `FeatureNet`: `.features(images) -> (B, num_features)`, `.logits(images)`,
        `.accuracy` on `test` (`.accuracy_split = "<test.name>/<test.split>"`), or `None` for
        both without `test`.

    Raises:
        InputTypeError: `dataset` or `test` is not a `Dataset`, a non-integer size, a bad `key`.
        InputValueError: unlabelled or non-finite images, fewer than 2 classes, a size or
            `learning_rate` out of range, or a `test` set of another image shape or with
            labels the dataset lacks.

    Example:
        >>> from gaussjax.data import load_dataset
        >>> train, test = load_dataset("digits"), load_dataset("digits", split="test")
        >>> net = train_feature_net(train, jax.random.key(0), steps=20, widths=(8,), num_features=16,
        ...                         test=test, progress=False)
        >>> net.features(test.images).shape, net.accuracy_split, 0 <= net.accuracy <= 1
        ((355, 16), 'digits/test', True)
    """
    images, labels = _labelled_images("dataset", dataset, "the feature net")
    key = check_key(key)
    num_features = check_int("num_features", num_features, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    learning_rate = check_real("learning_rate", learning_rate, minimum=0, strict=True)
    image_shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
    widths = _check_widths(widths, image_shape)
    classes, targets = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise InputValueError(f"`dataset` must have at least 2 classes to train a classifier, got {len(classes)} "
                              f"(labels {classes.tolist()})")
    held_out = _check_held_out(test, image_shape, classes)

    module = FeatureCNN(widths=widths, num_features=num_features, num_classes=len(classes))
    optimizer = _optimizer(learning_rate, steps)
    init_key, data_key = jax.random.split(key)
    params, opt_state = _initial_state(init_key, module=module, optimizer=optimizer, image_shape=image_shape)
    targets = jnp.asarray(targets.reshape(-1), jnp.int32)

    from tqdm.auto import tqdm

    name = getattr(dataset, "name", "?")
    for step in tqdm(range(steps), desc=f"feature net ({name})", disable=not progress, unit="step"):
        params, opt_state = _train_step(params, opt_state, images, targets, data_key, step, module=module,
                                        optimizer=optimizer, batch_size=batch_size)

    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
    net = FeatureNet(params=params, module=module, image_shape=image_shape,
                     classes=tuple(int(c) for c in classes), dataset_name=str(name))
    if held_out is None:
        return net
    test_images, test_labels, accuracy_split = held_out
    return dataclasses.replace(net, accuracy=_accuracy(net, test_images, test_labels), accuracy_split=accuracy_split)


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
        The absolute path written: `load_feature_net(save_feature_net(net, path))` is a
        `FeatureNet` with the same metadata whose features are bitwise those of `net`.

    Raises:
        InputTypeError: `net` is not a `FeatureNet`.
        InputValueError: `path` exists and is not an empty directory.
    """
    import orbax.checkpoint as ocp

    if not isinstance(net, FeatureNet):
        raise InputTypeError(f"`net` must be a FeatureNet, got {type(net).__name__}")
    path = Path(path).absolute()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputValueError(f"`path` {path} already exists and is not an empty directory")
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

    Raises:
        InputFileNotFoundError: `path` holds no `feature_net.json`.
        InputValueError: the config is not one `save_feature_net` writes.
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise InputFileNotFoundError(f"`path` {path} holds no feature net ({CONFIG_FILE} is missing)")
    try:
        config = json.loads(config_file.read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise InputValueError(f"unknown format_version {config.get('format_version')!r}")
        arch = config["architecture"]
        module = FeatureCNN(widths=tuple(int(w) for w in arch["widths"]), num_features=int(arch["num_features"]),
                            num_classes=int(arch["num_classes"]), convs_per_stage=int(arch["convs_per_stage"]))
        height, width, channels = (int(s) for s in config["image_shape"])
        image_shape = (height, width, channels)
        classes = tuple(int(c) for c in config["classes"])
    except (ValueError, KeyError, TypeError) as error:
        raise InputValueError(f"`path` {config_file} is not a valid feature-net config: {error}") from None
    like = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    abstract = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), like)
    with without_read_only_notice(), ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(path / PARAMS_DIR, abstract)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return FeatureNet(params=params, module=module, image_shape=image_shape, classes=classes,
                      accuracy=config["accuracy"], accuracy_split=config["accuracy_split"],
                      dataset_name=config["dataset_name"])


__all__ = ["FeatureCNN", "FeatureNet", "load_feature_net", "save_feature_net", "train_feature_net"]
