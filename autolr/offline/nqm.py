"""The noisy quadratic model (NQM): a training problem whose expected loss is exact.

Zhang et al. 2019, "Which algorithmic choices matter at which batch sizes?
Insights from a noisy quadratic model". The loss is

    L(theta) = 0.5 * sum_i h_i * theta_i**2

with a diagonal curvature spectrum ``h`` (default ``h_i = 1 / i``, ``i = 1..dim``),
and a minibatch of size ``B`` sees the gradient ``h * theta + xi`` where
``xi ~ N(0, diag(c) / B)``; by default ``c = h`` (noise covariance proportional to
the curvature, as in the paper).

Two halves:

* :class:`NoisyQuadratic` is an ``nn.Module`` with one parameter ``theta`` that any
  ``torch.optim`` optimizer (and the autolr controller) can train with no neural
  network: ``model().backward()`` leaves ``h * theta + xi`` in ``theta.grad``.
  The noise comes from the module's own ``torch.Generator``, so a run is
  reproducible from ``seed``.
* For plain SGD the expected loss obeys an exact recursion per coordinate,
  ``E[theta_i^2]_{t+1} = (1 - lr_t h_i)^2 E[theta_i^2]_t + lr_t^2 v_i`` with
  ``v_i = c_i / B``, so the expected loss of any LR schedule is known
  (:func:`sgd_expected_loss`), and so is the best schedule
  (:func:`optimal_schedule`): the regret of a schedule is exact.

LRs are plain SGD step sizes, in units of ``1 / h``: SGD is stable in every
coordinate iff ``lr < 2 / max(h)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from autolr.errors import ConfigError

__all__ = [
    "NoisyQuadratic",
    "OptimalSchedule",
    "QuadraticSpec",
    "best_constant_lr",
    "constant_lr_expected_loss",
    "inverse_spectrum",
    "optimal_schedule",
    "piecewise_expected_loss",
    "sgd_expected_loss",
]

logger = logging.getLogger(__name__)

_DTYPE = torch.float64


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_finite_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _as_vector(name: str, value: Tensor | Sequence[float], dim: int | None) -> Tensor:
    try:
        vec = torch.as_tensor(value, dtype=_DTYPE).detach().clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name} must be a 1-D sequence of numbers, got {value!r}") from exc
    if vec.ndim != 1 or vec.numel() == 0:
        raise ConfigError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(vec.shape)}")
    if dim is not None and vec.numel() != dim:
        raise ConfigError(f"{name} must have dim={dim} entries, got {vec.numel()}")
    if not torch.isfinite(vec).all():
        raise ConfigError(f"{name} must be finite, got {vec.tolist()[:8]}...")
    return vec


def inverse_spectrum(dim: int) -> Tensor:
    """Curvature spectrum ``h_i = 1 / i`` for ``i = 1..dim``.

    Returns:
        ``(dim,)`` float64 tensor, decreasing from 1 to ``1 / dim``.
    """
    _check_int("dim", dim, 1)
    return 1.0 / torch.arange(1, dim + 1, dtype=_DTYPE)


@dataclass(frozen=True)
class QuadraticSpec:
    """Everything the exact recursion needs to know about an NQM.

    Attributes:
        curvature: ``(dim,)`` float64, the Hessian diagonal ``h`` (> 0).
        noise_var: ``(dim,)`` float64, per-step gradient-noise variance ``c / B`` (>= 0).
        init_second_moment: ``(dim,)`` float64, ``E[theta_i^2]`` at step 0.
    """

    curvature: Tensor
    noise_var: Tensor
    init_second_moment: Tensor

    def __post_init__(self) -> None:
        h = _as_vector("curvature", self.curvature, None)
        dim = h.numel()
        v = _as_vector("noise_var", self.noise_var, dim)
        m0 = _as_vector("init_second_moment", self.init_second_moment, dim)
        if (h <= 0).any():
            raise ConfigError(f"curvature must be > 0 everywhere, got min {h.min().item()!r}")
        if (v < 0).any():
            raise ConfigError(f"noise_var must be >= 0 everywhere, got min {v.min().item()!r}")
        if (m0 < 0).any():
            raise ConfigError(
                f"init_second_moment must be >= 0 everywhere, got min {m0.min().item()!r}"
            )
        object.__setattr__(self, "curvature", h)
        object.__setattr__(self, "noise_var", v)
        object.__setattr__(self, "init_second_moment", m0)

    @property
    def dim(self) -> int:
        """Number of coordinates."""
        return self.curvature.numel()

    @property
    def max_stable_lr(self) -> float:
        """``2 / max(h)``: SGD diverges in expectation at or above this LR."""
        return 2.0 / self.curvature.max().item()

    def loss_of_second_moment(self, second_moment: Tensor) -> Tensor:
        """Expected loss ``0.5 * sum(h * E[theta^2])``; ``(..., dim)`` -> ``(...)``."""
        return 0.5 * (second_moment * self.curvature).sum(-1)


class NoisyQuadratic(nn.Module):
    """A noisy quadratic training problem that a ``torch.optim`` optimizer can train.

    Calling the module returns a minibatch loss whose gradient with respect to
    ``theta`` is ``h * theta + xi``, ``xi ~ N(0, diag(c) / batch_size)``, drawn from
    the module's own generator. The returned value is
    ``0.5 * sum(h * theta^2) + sum(xi * theta)``, an unbiased estimate of the true
    loss at ``theta``.

    Args:
        dim: number of coordinates.
        batch_size: minibatch size ``B``; the gradient-noise variance is ``c / B``.
        curvature: ``(dim,)`` Hessian diagonal ``h`` (> 0); default ``1 / i``.
        noise: ``(dim,)`` per-example gradient-noise variance ``c`` (>= 0);
            default ``c = h``.
        init_scale: ``theta`` starts at ``init_scale`` in every coordinate
            (deterministic, so ``E[theta_i^2]_0 = init_scale^2``).
        seed: seed of the noise generator.
        dtype: dtype of ``theta``.

    Example:
        >>> nqm = NoisyQuadratic(dim=100, batch_size=16, seed=0)
        >>> opt = torch.optim.SGD(nqm.parameters(), lr=0.5)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     nqm().backward()
        ...     opt.step()
        >>> float(nqm.expected_loss()) < float(nqm.spec.loss_of_second_moment(
        ...     nqm.spec.init_second_moment))
        True
    """

    curvature: Tensor
    noise: Tensor

    def __init__(
        self,
        dim: int = 100,
        batch_size: int = 32,
        *,
        curvature: Tensor | Sequence[float] | None = None,
        noise: Tensor | Sequence[float] | None = None,
        init_scale: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        _check_int("dim", dim, 1)
        _check_int("batch_size", batch_size, 1)
        _check_int("seed", seed, 0)
        init_scale = _check_finite_float("init_scale", init_scale)
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point dtype, got {dtype}")
        h = inverse_spectrum(dim) if curvature is None else _as_vector("curvature", curvature, dim)
        c = h.clone() if noise is None else _as_vector("noise", noise, dim)
        if (h <= 0).any():
            raise ConfigError(f"curvature must be > 0 everywhere, got min {h.min().item()!r}")
        if (c < 0).any():
            raise ConfigError(f"noise must be >= 0 everywhere, got min {c.min().item()!r}")
        self.dim = dim
        self.batch_size = batch_size
        self.init_scale = init_scale
        self.seed = seed
        self.register_buffer("curvature", h.to(dtype))
        self.register_buffer("noise", c.to(dtype))
        self.theta = nn.Parameter(torch.full((dim,), init_scale, dtype=dtype))
        self._spec = QuadraticSpec(
            curvature=h,
            noise_var=c / batch_size,
            init_second_moment=torch.full_like(h, init_scale**2),
        )
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    @property
    def spec(self) -> QuadraticSpec:
        """The exact description (float64) used by :func:`sgd_expected_loss`."""
        return self._spec

    def reseed(self, seed: int) -> None:
        """Restart the noise stream from ``seed``."""
        _check_int("seed", seed, 0)
        self.seed = seed
        self.generator.manual_seed(seed)

    def sample_noise(self) -> Tensor:
        """One draw of the minibatch gradient noise ``xi``: ``(dim,)``, on ``theta``'s device."""
        z = torch.randn(self.dim, generator=self.generator, dtype=self.theta.dtype)
        std = (self.noise / self.batch_size).sqrt()
        return z.to(self.theta.device) * std

    def forward(self) -> Tensor:
        """Noisy minibatch loss, a scalar; its gradient is ``h * theta + xi``."""
        xi = self.sample_noise()
        return 0.5 * (self.curvature * self.theta**2).sum() + (xi * self.theta).sum()

    def expected_loss(self) -> Tensor:
        """True (noise-free) loss ``0.5 * sum(h * theta^2)`` at the current ``theta``; scalar."""
        with torch.no_grad():
            return 0.5 * (self.curvature * self.theta**2).sum()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, batch_size={self.batch_size}, init_scale={self.init_scale}"


def _check_lrs(lrs: Tensor | Sequence[float]) -> Tensor:
    lr = _as_vector("lrs", lrs, None) if not isinstance(lrs, Tensor) else lrs
    if isinstance(lrs, Tensor):
        if lr.ndim != 1 or lr.numel() == 0:
            raise ConfigError(f"lrs must be a non-empty 1-D tensor, got shape {tuple(lr.shape)}")
        if not torch.isfinite(lr.detach()).all():
            raise ConfigError("lrs must be finite")
        lr = lr.to(_DTYPE)
    if (lr.detach() < 0).any():
        raise ConfigError(f"lrs must be >= 0, got min {lr.detach().min().item()!r}")
    return lr


def sgd_expected_loss(lrs: Tensor | Sequence[float], spec: QuadraticSpec) -> Tensor:
    """Exact expected loss of plain SGD (no momentum) under a per-step LR schedule.

    Iterates ``m_{t+1} = (1 - lr_t h)^2 m_t + lr_t^2 v`` with ``m = E[theta^2]``.
    Differentiable in ``lrs``.

    Args:
        lrs: ``(T,)`` LR used at steps ``0..T-1``, linear scale, >= 0.
        spec: the problem.

    Returns:
        ``(T + 1,)`` float64 tensor: the expected loss before step 0, ..., after step T-1.
    """
    lr = _check_lrs(lrs)
    h, v = spec.curvature, spec.noise_var
    m = spec.init_second_moment
    out = [spec.loss_of_second_moment(m)]
    for t in range(lr.numel()):
        m = (1.0 - lr[t] * h) ** 2 * m + lr[t] ** 2 * v
        out.append(spec.loss_of_second_moment(m))
    return torch.stack(out)


def piecewise_expected_loss(
    chunk_lrs: Tensor, chunk_lengths: Tensor | Sequence[int], spec: QuadraticSpec
) -> Tensor:
    """Exact final expected loss of SGD with a piecewise-constant LR, in closed form.

    A chunk of ``n`` steps at LR ``lr`` maps ``m -> a^n m + lr^2 v (1 - a^n) / (1 - a)``
    with ``a = (1 - lr h)^2``. Evaluated in log space and vectorized over chunks and
    schedules, so it is cheap enough to optimize with autograd.

    Args:
        chunk_lrs: ``(K,)`` or ``(S, K)`` LRs (linear scale, > 0), one per chunk.
        chunk_lengths: ``(K,)`` steps per chunk (>= 0 ints).
        spec: the problem.

    Returns:
        ``()`` or ``(S,)`` float64 tensor: expected loss after the last chunk.
    """
    lr = chunk_lrs.to(_DTYPE)
    squeeze = lr.ndim == 1
    if squeeze:
        lr = lr.unsqueeze(0)
    n = torch.as_tensor(chunk_lengths, dtype=_DTYPE)
    if lr.ndim != 2 or n.ndim != 1 or lr.shape[-1] != n.numel():
        raise ConfigError(
            f"chunk_lrs (shape {tuple(chunk_lrs.shape)}) and chunk_lengths "
            f"(shape {tuple(n.shape)}) must have the same number of chunks"
        )
    if (lr.detach() <= 0).any():
        raise ConfigError(f"chunk_lrs must be > 0, got min {lr.detach().min().item()!r}")
    h, v, m0 = spec.curvature, spec.noise_var, spec.init_second_moment
    lh = lr.unsqueeze(-1) * h  # (S, K, dim)
    log_a = 2.0 * torch.log(torch.abs(1.0 - lh).clamp_min(1e-300))
    nk = n.view(1, -1, 1)
    # sum_{j<n} a^j = expm1(n log a) / expm1(log a); the ratio is n in the limit a -> 1
    denom = torch.expm1(log_a)
    safe = denom.abs() > 1e-12
    geom = torch.where(
        safe, torch.expm1(nk * log_a) / torch.where(safe, denom, torch.ones_like(denom)), nk
    )
    log_decay = nk * log_a  # (S, K, dim): log a_k^{n_k}
    # decay applied after chunk k: exp(sum_{j>k} log_decay_j)
    suffix = torch.flip(torch.cumsum(torch.flip(log_decay, [1]), 1), [1]) - log_decay
    injected = (lr.unsqueeze(-1) ** 2 * v * geom * torch.exp(suffix)).sum(1)
    m_final = m0 * torch.exp(log_decay.sum(1)) + injected
    loss = spec.loss_of_second_moment(m_final)
    return loss[0] if squeeze else loss


def constant_lr_expected_loss(
    lrs: Tensor | Sequence[float], total_steps: int, spec: QuadraticSpec
) -> Tensor:
    """Exact expected loss after ``total_steps`` of SGD at each constant LR in ``lrs``.

    Args:
        lrs: ``(n,)`` candidate LRs, linear scale, > 0.
        total_steps: number of SGD steps.
        spec: the problem.

    Returns:
        ``(n,)`` float64 tensor.
    """
    _check_int("total_steps", total_steps, 1)
    lr = _check_lrs(lrs)
    return piecewise_expected_loss(lr.unsqueeze(-1), [total_steps], spec)


def best_constant_lr(
    total_steps: int, spec: QuadraticSpec, *, grid_size: int = 2001
) -> tuple[float, float]:
    """Best constant LR for ``total_steps`` of SGD: a log-grid search, then golden section.

    The search covers ``[1e-6, 1) * max_stable_lr``.

    Returns:
        ``(lr, expected_final_loss)``.
    """
    _check_int("total_steps", total_steps, 1)
    _check_int("grid_size", grid_size, 3)
    top = spec.max_stable_lr
    log_grid = torch.linspace(math.log(top * 1e-6), math.log(top * (1 - 1e-9)), grid_size)
    with torch.no_grad():
        losses = constant_lr_expected_loss(log_grid.exp(), total_steps, spec)
    i = int(torch.argmin(losses))
    lo = log_grid[max(i - 1, 0)].item()
    hi = log_grid[min(i + 1, grid_size - 1)].item()

    def f(u: float) -> float:
        with torch.no_grad():
            return constant_lr_expected_loss([math.exp(u)], total_steps, spec).item()

    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = f(d)
    candidates = [(losses[i].item(), log_grid[i].item()), (fc, c), (fd, d)]
    loss, u = min(candidates)
    return math.exp(u), loss


@dataclass(frozen=True)
class OptimalSchedule:
    """Result of :func:`optimal_schedule`.

    Attributes:
        lrs: ``(T,)`` float64, the LR of every step (piecewise constant over chunks).
        chunk_lrs: ``(K,)`` float64, the LR of each chunk.
        chunk_lengths: ``(K,)`` int64, steps per chunk (sums to ``T``).
        expected_loss: exact expected final loss of ``lrs``.
        constant_lr: best constant LR for the same ``T``.
        constant_expected_loss: its exact expected final loss.
    """

    lrs: Tensor
    chunk_lrs: Tensor
    chunk_lengths: Tensor
    expected_loss: float
    constant_lr: float
    constant_expected_loss: float

    def regret(self, lrs: Tensor | Sequence[float], spec: QuadraticSpec) -> float:
        """Expected final loss of the SGD schedule ``lrs`` (``(T,)``) minus the optimum's."""
        lr = _check_lrs(lrs)
        if lr.numel() != self.lrs.numel():
            raise ConfigError(
                f"lrs must have {self.lrs.numel()} steps like the optimum, got {lr.numel()}"
            )
        with torch.no_grad():
            return sgd_expected_loss(lr, spec)[-1].item() - self.expected_loss


def _chunk_lengths(total_steps: int, num_chunks: int) -> Tensor:
    base, extra = divmod(total_steps, num_chunks)
    return torch.tensor([base + (1 if k < extra else 0) for k in range(num_chunks)])


def _solve_chunks(lengths: Tensor, init_lrs: Tensor, spec: QuadraticSpec, max_iter: int) -> Tensor:
    """L-BFGS on ``log(final loss)`` over chunk LRs ``max_stable_lr * sigmoid(u)``."""
    top = spec.max_stable_lr
    p = (init_lrs / top).clamp(1e-12, 1 - 1e-9)
    u = torch.log(p / (1 - p)).detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [u],
        lr=1.0,
        max_iter=max_iter,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        history_size=50,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        obj = torch.log(piecewise_expected_loss(top * torch.sigmoid(u), lengths, spec))
        obj.backward()
        return obj

    opt.step(closure)
    return (top * torch.sigmoid(u)).detach()


def optimal_schedule(
    total_steps: int,
    spec: QuadraticSpec | NoisyQuadratic,
    *,
    num_chunks: int = 64,
    max_iter: int = 200,
) -> OptimalSchedule:
    """The SGD LR schedule with the lowest exact expected loss after ``total_steps``.

    The schedule is piecewise constant over ``num_chunks`` equal chunks. The chunk
    LRs are parametrized as ``max_stable_lr * sigmoid(u)`` (every coordinate stays
    stable) and ``log`` of the closed-form final loss (:func:`piecewise_expected_loss`)
    is minimized with L-BFGS, coarse to fine: 4 chunks from the best constant LR,
    then each solution, doubled in resolution, starts the next level. A level's
    result is kept only if it improves on the previous one, so the answer is never
    worse than the best constant LR, which is returned alongside.

    Args:
        total_steps: the budget ``T`` (>= 1).
        spec: the problem, or a :class:`NoisyQuadratic` (its ``spec`` is used).
        num_chunks: number of constant pieces, ``1 <= num_chunks <= total_steps``.
        max_iter: L-BFGS iterations per level.
    """
    _check_int("total_steps", total_steps, 1)
    _check_int("num_chunks", num_chunks, 1)
    _check_int("max_iter", max_iter, 1)
    if num_chunks > total_steps:
        raise ConfigError(
            f"num_chunks must be <= total_steps={total_steps}, got num_chunks={num_chunks}"
        )
    if isinstance(spec, NoisyQuadratic):
        spec = spec.spec
    const_lr, const_loss = best_constant_lr(total_steps, spec)
    best_steps = torch.full((total_steps,), const_lr, dtype=_DTYPE)
    best_loss = const_loss
    levels = []
    k = min(4, num_chunks)
    while k < num_chunks:
        levels.append(k)
        k *= 2
    levels.append(num_chunks)
    for k in levels:
        lengths = _chunk_lengths(total_steps, k)
        ends = torch.cumsum(lengths, 0)
        # start from the previous level: geometric mean of its per-step LRs in each chunk
        init = torch.stack(
            [
                best_steps[int(e - n) : int(e)].log().mean().exp()
                for e, n in zip(ends.tolist(), lengths.tolist())
            ]
        )
        chunk_lrs = _solve_chunks(lengths, init, spec, max_iter)
        with torch.no_grad():
            loss = piecewise_expected_loss(chunk_lrs, lengths, spec).item()
        logger.debug("optimal_schedule: %d chunks, expected loss %.6g", k, loss)
        if math.isfinite(loss) and loss < best_loss:
            best_loss = loss
            best_steps = torch.repeat_interleave(chunk_lrs, lengths)
    lengths = _chunk_lengths(total_steps, num_chunks)
    ends = torch.cumsum(lengths, 0)
    chunk_lrs = torch.stack([best_steps[int(e) - 1] for e in ends.tolist()])
    if not torch.equal(torch.repeat_interleave(chunk_lrs, lengths), best_steps):
        # a coarser level won and its pieces do not align with num_chunks: report per step
        chunk_lrs, lengths = best_steps.clone(), torch.ones(total_steps, dtype=torch.int64)
    return OptimalSchedule(
        lrs=best_steps,
        chunk_lrs=chunk_lrs,
        chunk_lengths=lengths,
        expected_loss=best_loss,
        constant_lr=const_lr,
        constant_expected_loss=const_loss,
    )
