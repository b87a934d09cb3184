"""Models made of parts: an encoder network, a posterior family q(z|x), a prior p(z), a decoder
network and its pixel likelihood p(x|z) (Pyro's model/guide split; STYLE.md section 2).

- :mod:`~vaelab.models.base`: :class:`Draws`, the answer every model gives the objectives, and
  :class:`BaseVAE`, the verbs built on encode/decode;
- :mod:`~vaelab.models.vae`: the one-layer :class:`VAE` and :func:`build_model`; the other families
  in :mod:`~vaelab.models.hierarchy`, :mod:`~vaelab.models.vqvae`, :mod:`~vaelab.models.gumbel`;
- the parts: :mod:`~vaelab.models.networks`, :mod:`~vaelab.models.priors`,
  :mod:`~vaelab.models.posteriors` (and :mod:`~vaelab.models.flows`), :mod:`~vaelab.models.likelihoods`;
- :mod:`~vaelab.models.registry`: the PRIORS, POSTERIORS, LIKELIHOODS and ARCHITECTURES registries
  (no torch: vaelab.config reads them).

The names below are imported on first use (PEP 562), so that importing vaelab.models.registry (as
vaelab.config does) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaelab._lazy import lazy_face

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["BaseVAE", "Draws", "ElboTerms", "full", "interpolate_latents"], "vaelab.models.base"),
    **dict.fromkeys(["VAE", "build_model", "he_init"], "vaelab.models.vae"),
    **dict.fromkeys(
        ["MIN_PIXEL_LOGVAR", "PIXEL_MODES", "PixelLikelihood", "PixelMode", "make_likelihood"],
        "vaelab.models.likelihoods",
    ),
    **dict.fromkeys(
        ["ACTIVATIONS", "ConvDecoder", "ConvEncoder", "GaussianEncoder", "MLPDecoder", "MLPEncoder"],
        "vaelab.models.networks",
    ),
    **dict.fromkeys(
        ["FlowPosterior", "GaussianPosterior", "gaussian_distribution", "make_posterior"], "vaelab.models.posteriors"
    ),
    **dict.fromkeys(["Prior", "VampPrior", "make_prior"], "vaelab.models.priors"),
    **dict.fromkeys(["ARCHITECTURES", "LIKELIHOODS", "POSTERIORS", "PRIORS"], "vaelab.models.registry"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_face("vaelab.models", _EXPORTS, globals())


if TYPE_CHECKING:  # what a type checker and an IDE see: the same names, imported eagerly
    from vaelab.models.base import BaseVAE, Draws, ElboTerms, full, interpolate_latents  # noqa: F401
    from vaelab.models.likelihoods import (  # noqa: F401
        MIN_PIXEL_LOGVAR,
        PIXEL_MODES,
        PixelLikelihood,
        PixelMode,
        make_likelihood,
    )
    from vaelab.models.networks import (  # noqa: F401
        ACTIVATIONS,
        ConvDecoder,
        ConvEncoder,
        GaussianEncoder,
        MLPDecoder,
        MLPEncoder,
    )
    from vaelab.models.posteriors import FlowPosterior, GaussianPosterior, gaussian_distribution, make_posterior  # noqa: F401
    from vaelab.models.priors import Prior, VampPrior, make_prior  # noqa: F401
    from vaelab.models.registry import ARCHITECTURES, LIKELIHOODS, POSTERIORS, PRIORS  # noqa: F401
    from vaelab.models.vae import VAE, build_model, he_init  # noqa: F401
