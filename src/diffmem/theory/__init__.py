"""The paper's theory, computed (Shah et al. 2025, Sec. 4 and App. A, C; docs/method.md, "Theory commands").

- denoisers.py: closed-form optimal denoisers of a finite set (baseline `empirical_denoiser`, Algorithm 1's
  `ambient_denoiser`), their posterior (`empirical_posterior`) and the exact samplers they drive
  (`baseline_sample`, `ambient_sample` (Lemma 4.1), `algorithm1_sample`), all through the EDM samplers of `diffusion.samplers`.
- closed_form.py: `closed_form_check`, where the exact optima's samples land, measured (all of Algorithm 1's on
  some training image; the share on the source of the copy they passed).
- leakage.py: mutual information of training data and m generated samples (Lemma 4.2, Appendix C.1.3), exact
  Gaussian formulas and Monte Carlo estimators (plug-in Gaussian, KSG).
- mixtures.py: TV of Gaussian subpopulations under noise (Lemmas 4.5, A.5, A.6) and Feldman's heavy-tailed
  subpopulation model merged by noise (Theorem 4.3).
- commitment.py: the commitment curve of a data set and an empirical sigma_n heuristic (`commitment_curve`,
  `suggest_sigma_n`, `default_sigma_grid`).
- distances.py: exact Euclidean nearest neighbours. plots.py: the figures (imports matplotlib; not re-exported here).
"""

from diffmem.theory.closed_form import closed_form_check
from diffmem.theory.commitment import DEFAULT_SIGMAS, commitment_curve, default_sigma_grid, suggest_sigma_n
from diffmem.theory.denoisers import (
    Posterior,
    algorithm1_sample,
    ambient_denoiser,
    ambient_sample,
    baseline_sample,
    empirical_denoiser,
    empirical_posterior,
)
from diffmem.theory.leakage import (
    ambient_bound,
    gaussian_mi_estimate,
    ksg_mi_estimate,
    leakage_ambient,
    leakage_baseline,
    leakage_report,
    monte_carlo_leakage,
)
from diffmem.theory.mixtures import gaussian_tv, mixtures_report, simulate_subpopulations
from diffmem.theory.distances import median_nn_distance, nearest

__all__ = [
    "DEFAULT_SIGMAS",
    "Posterior",
    "algorithm1_sample",
    "ambient_bound",
    "ambient_denoiser",
    "ambient_sample",
    "baseline_sample",
    "closed_form_check",
    "commitment_curve",
    "default_sigma_grid",
    "empirical_denoiser",
    "empirical_posterior",
    "gaussian_mi_estimate",
    "gaussian_tv",
    "ksg_mi_estimate",
    "leakage_ambient",
    "leakage_baseline",
    "leakage_report",
    "median_nn_distance",
    "mixtures_report",
    "monte_carlo_leakage",
    "nearest",
    "simulate_subpopulations",
    "suggest_sigma_n",
]
