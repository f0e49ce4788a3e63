"""EDM networks in Flax: U-Nets, the four EDM preconditioners, the loss, the network as a denoiser, and importers.

`SongUNet` reimplements NVlabs/edm's DDPM++/NCSN++ U-Net and `DhariwalUNet` its ADM
U-Net (same arguments, structure, initialization and parameter counts) on NHWC images;
`EDMPrecond`, `VPPrecond`, `VEPrecond` and `iDDPMPrecond` wrap either into a denoiser
`D(x; sigma)`; `edm_loss` is EDM's training loss; `NeuralDenoiser` puts a network behind
the same `denoise`/`score` protocol as the analytic models. `load_edm_pickle` reads
EDM's snapshot pickles without torch and without running their code;
`save_safetensors` / `load_safetensors` move networks without pickles. `gaussian_design`
adds the paper's Sec. 8 options to a preconditioner: a fixed Gaussian bypass and whitened coordinates.
"""

from gaussjax._torch import UnsafePickleError
from gaussjax.nn._denoiser import NeuralDenoiser
from gaussjax.nn._dhariwal import DhariwalUNet
from gaussjax.nn._edm_pickle import load_edm_pickle
from gaussjax.nn._gaussian_design import (
    GaussianEDMPrecond,
    GaussianiDDPMPrecond,
    GaussianVEPrecond,
    GaussianVPPrecond,
    SamplingStart,
    gaussian_design,
    sampling_start,
    unwhiten_flat,
    warm_start_skip,
    whiten_flat,
    with_gaussian,
)
from gaussjax.nn._loss import edm_loss, edm_sigmas
from gaussjax.nn._precond import (
    EDMPrecond,
    VEPrecond,
    VPPrecond,
    edm_preconditioning,
    iddpm_preconditioning,
    iDDPMPrecond,
    ve_preconditioning,
    vp_preconditioning,
)
from gaussjax.nn._safetensors import load_safetensors, save_safetensors
from gaussjax.nn._unet import SongUNet

__all__ = [
    "DhariwalUNet",
    "EDMPrecond",
    "GaussianEDMPrecond",
    "GaussianVEPrecond",
    "GaussianVPPrecond",
    "GaussianiDDPMPrecond",
    "NeuralDenoiser",
    "SamplingStart",
    "SongUNet",
    "UnsafePickleError",
    "VEPrecond",
    "VPPrecond",
    "edm_loss",
    "edm_preconditioning",
    "edm_sigmas",
    "gaussian_design",
    "iDDPMPrecond",
    "iddpm_preconditioning",
    "load_edm_pickle",
    "load_safetensors",
    "sampling_start",
    "save_safetensors",
    "unwhiten_flat",
    "ve_preconditioning",
    "vp_preconditioning",
    "warm_start_skip",
    "whiten_flat",
    "with_gaussian",
]
