"""Sample quality: Frechet distance, KID and precision/recall on features of a network.

- `FeatureStats` (mean, covariance, count; streamed and mergeable) and `frechet_distance`
  (Heusel et al. 2017); `feature_stats` accumulates them over batches of images.
- `kernel_inception_distance` (unbiased MMD^2, cubic polynomial kernel; Binkowski et al. 2018)
  and `precision_recall` (k-NN manifolds; Kynkaanniemi et al. 2019), on features.
- `load_inception(path)`: FID's InceptionV3, its weights read from pytorch-fid's weight file
  without torch and without running pickled code. Distances on its features are FID/KID.
- `train_feature_net(dataset, key, test=held_out)`: a small classifier trained on a small
  dataset (digits, MNIST), whose penultimate features stand in for Inception's; its accuracy
  is measured on the held-out `test` set the caller passes. Distances on them are "FD",
  never FID.

See `docs/quality.md`.
"""

from gaussjax.quality._feature_net import FeatureNet, load_feature_net, save_feature_net, train_feature_net
from gaussjax.quality._inception import InceptionFeatures, inception_from_state_dict, load_inception
from gaussjax.quality._kid import KID, kernel_inception_distance
from gaussjax.quality._precision_recall import PrecisionRecall, precision_recall
from gaussjax.quality._stats import FeatureStats, feature_stats, frechet_distance

__all__ = [
    "FeatureNet",
    "FeatureStats",
    "InceptionFeatures",
    "KID",
    "PrecisionRecall",
    "feature_stats",
    "frechet_distance",
    "inception_from_state_dict",
    "kernel_inception_distance",
    "load_feature_net",
    "load_inception",
    "precision_recall",
    "save_feature_net",
    "train_feature_net",
]
