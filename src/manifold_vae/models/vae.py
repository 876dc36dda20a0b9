"""The VAE: any encoder, a manifold latent layer, any decoder, a likelihood.

    raw = encoder(x),  z ~ q(z|x),  m = g(x) · f(z),  x ~ p_θ(x | decoder(m))
    ELBO(x) = E_q[log p_θ(x | m)] - KL(q(z|x) || p(z))

The latent layer (:class:`~manifold_vae.latents.ManifoldLatent`) decides what ``q``, ``f`` and
``g`` are — the ER posterior on any manifold (Golikov & Kretov, arXiv:1812.02769), the Gaussian
VAE on ``R<k>``, or a posterior on a sphere itself; the likelihood
(:mod:`manifold_vae.likelihoods`) what the decoder's outputs mean. The networks are yours, or
ready-made pairs from :mod:`.networks`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..latents import ManifoldLatent
from ..likelihoods import Likelihood
from ..manifolds.rotations import ROTATION_GROUP_ORDERS, rotation_group
from .equivariance import rotation_turn_consistency, turn_consistency

DEFAULT_EVAL_ROWS = 32768     # decoder rows per IWAE chunk (an MLP's: 32 MB per 256-wide layer)
# Rows per decoder pass on a CPU, within one IWAE chunk: a 256-wide layer's activations for 4096
# rows (4 MB) stay in cache, and the 256-256-100 decoder runs 1.8x faster per row than in passes
# of 32768 rows (measured, 2 threads). A GPU takes the whole chunk in one pass.
CPU_DECODER_PASS_ROWS = 4096


class VAE(nn.Module):
    """A VAE made of ``encoder -> latent -> decoder`` and a ``likelihood``.

    Args:
        encoder: any module mapping a batch of observations ``(..., D)`` (as
            ``likelihood.transform`` gives them) to ``(..., latent.param_dim)`` raw parameters.
        latent: the latent layer.
        decoder: any module mapping points ``(..., latent.point_dim)`` on ``M`` to
            ``(..., likelihood.param_dim)`` likelihood parameters; it must accept leading sample
            dims (the IWAE bound decodes ``(K, batch, point_dim)``).
        likelihood: e.g. :class:`~manifold_vae.likelihoods.GaussianLikelihood` ``(D)``.
        turn_consistency: weight of the in-plane turn-consistency term for image data
            (:mod:`.equivariance`; 0: off), which needs ``image_shape`` ``(C, H, W)``. It is
            added to the training loss only; the ELBO and IWAE are the model's own.
        hypotheses: ``H`` posteriors per example (the encoder then emits
            ``H · latent.param_dim`` numbers, hypothesis after hypothesis). Each example's
            posterior is the hypothesis with the best ELBO at its central point,
            ``log p(x | decoder(m̄_h)) − KL_h`` (:meth:`choose`): a deterministic function of
            ``x``, so the ELBO and IWAE of the chosen posterior are bounds of the same model as
            with one hypothesis. Training takes the chosen one's ELBO (winner takes all, as in
            multiple-choice learning, Guzman-Rivera et al. 2012; Rupprecht et al.,
            arXiv:1612.00197): an encoder can then be discontinuous where one continuous map
            would fold the manifold (e.g. a pose and the pose an object looks alike in).
        pose_grid: ``G`` (12, 24 or 60; 0: off) — each hypothesis is also tried turned by every
            rotation of the tetrahedral, octahedral or icosahedral group (``m = R_j · g(x) ·
            f(z)``, the group action's ``SO(3)`` element left-multiplied), and the best of the
            ``H · G`` candidates is chosen as above: a discrete search over poses with the
            decoder as it is, the encoder giving the continuous offset (as cryo-EM reconstruction
            searches poses). The choice stays a function of ``x``, so the bounds stay bounds.
            Needs a latent whose group action has an ``SO(3)`` factor.

    Example::

        >>> import torch
        >>> from manifold_vae.common import MLP
        >>> from manifold_vae.likelihoods import GaussianLikelihood
        >>> latent = ManifoldLatent("S1", group_action=True)
        >>> model = VAE(MLP(100, [64], latent.param_dim), latent, MLP(latent.point_dim, [64], 100),
        ...             GaussianLikelihood(100))
        >>> sorted(model.loss(torch.randn(8, 100)))
        ['elbo', 'kl', 'loss', 'reconstruction']
    """

    def __init__(self, encoder: nn.Module, latent: ManifoldLatent, decoder: nn.Module,
                 likelihood: Likelihood, *, turn_consistency: float = 0.0,
                 image_shape: tuple[int, ...] | None = None, hypotheses: int = 1,
                 pose_grid: int = 0):
        super().__init__()
        if int(hypotheses) != hypotheses or hypotheses < 1:
            raise ValueError(f"hypotheses must be a positive integer, got {hypotheses}")
        self.hypotheses = int(hypotheses)
        if turn_consistency < 0:
            raise ValueError(f"turn_consistency must be >= 0, got {turn_consistency}")
        if turn_consistency > 0 and (image_shape is None or len(image_shape) != 3):
            raise ValueError("turn_consistency turns images: give image_shape (channels, height, width)")
        if turn_consistency > 0 and latent.point_dim < 2 and not hasattr(decoder, "rotation"):
            raise ValueError(f"turn_consistency reads a planar angle from the latent's first two "
                             f"coordinates; {latent.spec.name} has {latent.point_dim}")
        self.turn_weight = float(turn_consistency)
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape else None
        if not isinstance(latent, ManifoldLatent):
            raise TypeError(f"latent must be a ManifoldLatent, got {type(latent).__name__}")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be a Likelihood (GaussianLikelihood, "
                            f"BernoulliLikelihood), got {type(likelihood).__name__}")
        # the likelihood first: its parameters come first in parameters(), the order in which
        # gradient clipping sums the squared norms (as in the models of earlier versions, so
        # that runs reproduce bit for bit)
        self.likelihood = likelihood
        self.encoder, self.latent, self.decoder = encoder, latent, decoder
        self.register_buffer("pose_grid", torch.zeros(0, 3, 3), persistent=False)
        self.set_pose_grid(pose_grid)

    def set_pose_grid(self, order: int) -> None:
        """Search ``order`` grid rotations per hypothesis from now on (0: none); see the class
        docstring. A trained model can be given one to search poses at test time."""
        slot = None
        if order:
            if order not in ROTATION_GROUP_ORDERS:
                raise ValueError(f"pose_grid must be 0 or one of "
                                 f"{', '.join(map(str, ROTATION_GROUP_ORDERS))}, got {order}")
            slot = self.latent.rotation_slot()
            if slot is None:
                raise ValueError(f"pose_grid turns the group action's SO(3) element; "
                                 f"{self.spec.name}"
                                 f"{' + group action' if self.spec.group_action else ''} has none")
        grid = self.pose_grid
        self._rotation_slot = slot
        self.pose_grid = (rotation_group(order, dtype=grid.dtype, device=grid.device) if order
                          else grid.new_zeros(0, 3, 3))

    # ------------------------------------------------------------------ descriptions
    @property
    def spec(self):
        """The latent's :class:`~manifold_vae.latents.LatentSpec`."""
        return self.latent.spec

    @property
    def manifold(self):
        return self.latent.manifold

    @property
    def data_dim(self) -> int:
        return self.likelihood.data_dim

    @property
    def max_eval_rows(self) -> int:
        """Rows (K samples × examples) per IWAE chunk: conv feature maps are far larger than MLP
        ones, so image decoders declare a smaller number."""
        return int(getattr(self.decoder, "max_eval_rows", DEFAULT_EVAL_ROWS))

    # ------------------------------------------------------------------ training objective
    def loss(self, x: Tensor, kl_weight: float = 1.0) -> dict[str, Tensor]:
        """Negative (β-weighted) ELBO averaged over the batch, with its parts (per-example means)."""
        x_obs = self.likelihood.observe(x)
        every = self.raw(x_obs).float()
        raw = self.choose(x_obs, every)
        out = self.latent(raw)
        rec = self.likelihood.log_prob(x_obs, self.decoder(out.point))
        kl = out.kl
        loss = (kl_weight * kl - rec).mean()
        parts = {"elbo": (rec - kl).detach().mean(), "kl": kl.detach().mean(),
                 "reconstruction": rec.detach().mean()}
        if self.turn_weight > 0 and self.training:
            turn = self._turn_consistency(x, every).mean()
            loss = loss + self.turn_weight * turn
            parts["turn_consistency"] = turn.detach()
        return {"loss": loss, **parts}

    def _turn_consistency(self, x: Tensor, raw: Tensor) -> Tensor:
        """The turn-consistency penalty per example (:mod:`.equivariance`): on the rotation a
        3D decoder turns its object by (``decoder.rotation``), else on the planar angle; asked
        of every hypothesis (``raw`` as :meth:`raw` gives it)."""
        def point(obs):
            return self.latent.mean_point(self.raw(obs).float())
        rotation = getattr(self.decoder, "rotation", None)
        if rotation is not None:
            return rotation_turn_consistency(lambda obs: rotation(point(obs)), x,
                                             rotation(self.latent.mean_point(raw)),
                                             self.image_shape, observe=self.likelihood.observe)
        return turn_consistency(point, x, self.latent.mean_point(raw), self.image_shape,
                                observe=self.likelihood.observe)

    def forward(self, x: Tensor, kl_weight: float = 1.0) -> dict[str, Tensor]:
        """Same as :meth:`loss` (so that DistributedDataParallel sees the training objective)."""
        return self.loss(x, kl_weight)

    # ------------------------------------------------------------------ hypotheses
    def raw(self, x_obs: Tensor) -> Tensor:
        """The encoder's raw outputs: ``(..., param_dim)``, or ``(H, ..., param_dim)`` with
        ``H > 1`` hypotheses."""
        raw = self.encoder(x_obs)
        want = self.hypotheses * self.latent.param_dim
        if raw.shape[-1] != want:
            raise ValueError(f"the encoder emits {raw.shape[-1]} numbers per example; the latent "
                             f"{self.spec.name} with {self.hypotheses} hypothes"
                             f"{'is' if self.hypotheses == 1 else 'es'} needs {want}")
        if self.hypotheses == 1:
            return raw
        return raw.unflatten(-1, (self.hypotheses, -1)).movedim(-2, 0)

    @property
    def n_candidates(self) -> int:
        """Posteriors tried per example: ``H`` hypotheses, each turned by the ``G`` grid
        rotations (``pose_grid``)."""
        return self.hypotheses * max(1, self.pose_grid.shape[0])

    def candidates(self, raw: Tensor) -> Tensor:
        """``(C, ..., param_dim)``: :meth:`raw`'s hypotheses, each then turned by every grid
        rotation (grid rotation ``j`` of hypothesis ``h`` at ``j · H + h``)."""
        if self.hypotheses == 1:
            raw = raw[None]
        if self._rotation_slot is None:
            return raw
        a, b = self._rotation_slot, self._rotation_slot + 6
        pair = raw[..., a:b].unflatten(-1, (2, 3))                       # (H, ..., 2, 3)
        grid = self.pose_grid.to(raw.dtype)
        turned = torch.einsum("gij,...kj->g...ki", grid, pair).flatten(-2)   # (G, H, ..., 6)
        rest = raw.expand(grid.shape[0], *raw.shape)
        return torch.cat([rest[..., :a], turned, rest[..., b:]], -1).flatten(0, 1)

    def choose(self, x_obs: Tensor, raw: Tensor) -> Tensor:
        """Each example's posterior parameters ``(..., param_dim)`` from :meth:`raw`'s outputs:
        with hypotheses (or a pose grid), the candidate of best ``log p(x | decoder(m̄_c)) −
        KL_c`` (``m̄_c`` the central point; no sample is drawn, so the choice is a function of
        ``x`` alone). Gradients reach the chosen hypothesis only. The choice runs the decoder
        on the ``C`` central points without gradients (a decoder that keeps batch statistics
        sees them)."""
        if self.n_candidates == 1:
            return raw
        every = self.candidates(raw)
        return every.gather(0, self.chosen(x_obs, raw)[None, ..., None].expand_as(every[:1]))[0]

    def encode(self, x_obs: Tensor) -> Tensor:
        """The posterior parameters ``(..., param_dim)`` of observations as the likelihood
        transforms them: the chosen hypothesis's (:meth:`choose`), the encoder's without."""
        return self.choose(x_obs, self.raw(x_obs))

    @torch.no_grad()
    def chosen(self, x_obs: Tensor, raw: Tensor) -> Tensor:
        """Index into :meth:`candidates` of the chosen candidate per example (see
        :meth:`choose`), shape ``x_obs.shape[:-1]``."""
        if self.n_candidates == 1:
            return torch.zeros(x_obs.shape[:-1], dtype=torch.long, device=raw.device)
        every = self.candidates(raw)
        score = (self.likelihood.log_prob(x_obs, self.decoder(self.latent.mean_point(every)))
                 - self.latent.kl(every))
        return score.argmax(0)

    @torch.no_grad()
    def hypothesis_shares(self, x: Tensor) -> list[float]:
        """The share of the rows of ``x`` that choose each hypothesis (a hypothesis no row
        chooses is a dead head; ``[1.0]`` without hypotheses)."""
        counts = torch.zeros(self.hypotheses, dtype=torch.float64, device=x.device)
        for xs in torch.split(x, max(1, self.max_eval_rows // self.n_candidates)):
            x_obs = self.likelihood.transform(xs)
            head = self.chosen(x_obs, self.raw(x_obs)).reshape(-1) % self.hypotheses
            counts += torch.bincount(head, minlength=self.hypotheses).to(counts)
        return (counts / max(1, x.shape[0])).tolist()

    # ------------------------------------------------------------------ evaluation
    def log_weights(self, x: Tensor, k: int) -> Tensor:
        """Importance log-weights ``log p(x|m_k) + log p(z_k) - log q(z_k|x)``, shape ``(k, B)``.
        On a CPU the decoder and the likelihood run over a few samples at a time
        (:data:`CPU_DECODER_PASS_ROWS` rows), so their activations stay in cache."""
        x_obs = self.likelihood.transform(x)
        out = self.latent.sample(self.encode(x_obs), k)
        points = out.point
        if points.device.type == "cpu":
            step = max(1, CPU_DECODER_PASS_ROWS // max(1, points[0].numel() // points.shape[-1]))
            parts = points.split(step)
        else:
            parts = (points,)
        log_lik = torch.cat([self.likelihood.log_prob(x_obs, self.decoder(p)) for p in parts])
        return log_lik + out.log_ratio

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The posterior's central latent point on ``M`` for each observation (choosing among
        candidates a chunk of rows at a time: ``C`` decoder rows per observation)."""
        rows = max(1, self.max_eval_rows // self.n_candidates)
        if self.n_candidates == 1 or x.shape[0] <= rows:
            return self.latent.mean_point(self.encode(self.likelihood.transform(x)))
        return torch.cat([self.embed(xs) for xs in torch.split(x, rows)])

    @torch.no_grad()
    def decode_mean(self, m: Tensor) -> Tensor:
        """Mean of ``p_θ(x | m)`` in the data's own units (pixel probabilities for Bernoulli)."""
        return self.likelihood.mean(self.decoder(m))
