"""The Frechet distance in float64 NumPy and SciPy: the independent reference of the commands' FD.

    numpy_fd(real (N, F), fake (M, F)) = |m_r - m_f|^2 + tr(C_r + C_f - 2 (C_r C_f)^(1/2))

(Heusel et al. 2017), with unbiased covariances and SciPy's `sqrtm` (its real part).
"""

import numpy as np
import scipy.linalg


def numpy_fd(real: np.ndarray, fake: np.ndarray) -> float:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    c1, c2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return float(np.sum((real.mean(0) - fake.mean(0)) ** 2) + np.trace(c1 + c2 - 2 * root))
