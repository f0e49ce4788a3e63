"""EDM networks in Flax: the DDPM++ `SongUNet`, EDM preconditioning and loss, and the network as a denoiser.

`SongUNet` reimplements NVlabs/edm's DDPM++/NCSN++ U-Net (same arguments, structure,
initialization and parameter counts) on NHWC images; `EDMPrecond` wraps it into the
EDM denoiser `D(x; sigma)`; `edm_loss` is EDM's training loss; `NeuralDenoiser` puts a
trained network behind the same `denoise`/`score` protocol as the analytic models.
"""

from gaussjax.nn._denoiser import NeuralDenoiser
from gaussjax.nn._loss import edm_loss
from gaussjax.nn._precond import EDMPrecond, edm_preconditioning
from gaussjax.nn._unet import SongUNet

__all__ = ["EDMPrecond", "NeuralDenoiser", "SongUNet", "edm_loss", "edm_preconditioning"]
