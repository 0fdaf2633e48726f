"""Can a loss law fit on the run's own history forecast the final loss of a decay plan?

Two laws beside the LR-annealing law (``law_on_nqm.py``, ``law_check.py``):

- **multi-power law** (Luo et al., ICLR 2025): ``L(t) = L0 + A (S1(t) + S_W)^-alpha -
  LD(t)``, ``LD(t) = B sum_k (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(t))``, ``G(x) = 1 -
  (C x + 1)^-beta``, ``S_k(t)`` the LR area from step k to t. Fit here by variable
  projection (for fixed ``alpha, C, beta, gamma`` the law is linear in ``L0, A, B``: a
  grid of those four, a non-negative least-squares solve at each point) and then
  L-BFGS on all seven from the best point, on the relative residual.
- **a spectral law** (a noisy quadratic in ``K`` curvature bands): ``L(t) = c +
  sum_k a_k D_k(t) + b_k N_k(t)``, ``D_k`` the product of ``(1 - eta_s h_k)^2`` up to t
  (what is left of the start) and ``N_k`` the sum of ``eta_s^2`` times the same product
  from s to t (the noise that SGD at those LRs leaves), for fixed bands ``h_k`` spread
  geometrically over ``[0.3 / (eta T), 1 / eta]``: linear in ``c, a, b >= 0``, so one
  non-negative least-squares solve fits it. On S0 it is the exact form of the loss.

Commands::

    python -m benchmarks.experiments.law_fits nqm      # S0, exact expected losses
    python -m benchmarks.experiments.law_fits truth    # decay_truth runs, training losses

``nqm``: (1) each law fit on three whole runs (constant, WSD with a 20% linear decay,
cosine) at a hold LR, forecasting the final loss of 27 plans (hold, then a linear,
1-sqrt or cosine decay over 10-90% of T); (2) the spectral law fit on what a run has
seen at 20/30/50% of T (four race branches at ``lr / 2**j``, 100 steps at the LR and
100 cooling, and the hold so far), forecasting the same plans. ``truth``: the
spectral law fit on the training losses a run has seen by each decay start of
:mod:`benchmarks.experiments.decay_truth` (its race branches and hold, 10-step means),
forecasting each later decay's final training loss; the decay it picks is scored by
the validation loss it really gave.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls

from autolr.offline.nqm import sgd_expected_loss
from benchmarks.experiments.decay_truth import OUT as TRUTH_DIR
from benchmarks.workloads.nqm import _problem, reference

T = 5000
SHAPES = ("linear", "1-sqrt", "cosine")
FRACS = [round(0.1 * i, 1) for i in range(1, 10)]
BANDS = 12
BIN = 10
DT = torch.float64


# ------------------------------------------------------------------ schedules


def decay(shape: str, d: int) -> np.ndarray:
    """Factors of a ``d``-step decay of ``shape`` from 1 towards 0."""
    left = (d - np.arange(d)) / (d + 1)
    if shape == "linear":
        return left
    if shape == "1-sqrt":
        return 1 - np.sqrt(1 - left)
    return 0.5 * (1 + np.cos(np.pi * (1 - left)))


def plan(eta: float, shape: str, frac: float, n: int = T) -> np.ndarray:
    d = round(frac * n)
    return np.concatenate([np.full(n - d, eta), eta * decay(shape, d)])


# ------------------------------------------------------------- spectral law


def band_states(lrs: np.ndarray, hs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``D`` and ``N`` of every band after each step from the start: ``(n, K)`` each."""
    d, nz = np.ones(len(hs)), np.zeros(len(hs))
    ds, ns = np.empty((len(lrs), len(hs))), np.empty((len(lrs), len(hs)))
    for i, e in enumerate(lrs):
        a = (1 - e * hs) ** 2
        d, nz = a * d, a * nz + e * e
        ds[i], ns[i] = d, nz
    return ds, ns


def spectral_fit(series: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, hs: np.ndarray):
    """Fit ``c, a, b >= 0`` on the relative residual; ``series``: ``(lrs, steps observed)``."""
    rows = []
    for lrs, idx in series:
        d, n = band_states(lrs, hs)
        rows.append(np.hstack([np.ones((len(idx), 1)), d[idx - 1], n[idx - 1]]))
    x = np.vstack(rows) / np.abs(y)[:, None]
    scale = np.linalg.norm(x, axis=0) + 1e-300
    coef, _ = nnls(x / scale, y / np.abs(y), maxiter=5000)
    return coef / scale


def spectral_forecast(coef: np.ndarray, hs: np.ndarray, history: np.ndarray, rest: np.ndarray):
    """The law's loss after ``history`` then ``rest``."""
    d, n = band_states(np.concatenate([history, rest]), hs)
    k = len(hs)
    return coef[0] + d[-1] @ coef[1 : k + 1] + n[-1] @ coef[k + 1 :]


def bands(eta: float, total: int) -> np.ndarray:
    return np.logspace(math.log10(0.3 / (eta * total)), math.log10(1.0 / eta), BANDS)


# -------------------------------------------------------- multi-power law


def mpl_features(series, alpha, c, beta, gamma):
    """``(S1)^-alpha`` and ``LD / B`` at the observed steps, for a grid of the nonlinear
    parameters (each ``(G,)``): two ``(G, M)`` tensors."""
    f1s, f2s = [], []
    for lrs, idx in series:
        lrs = torch.as_tensor(lrs, dtype=DT)
        idx = torch.as_tensor(idx)
        drop = torch.cat([lrs[:1], lrs[:-1]]) - lrs
        cs = torch.cumsum(lrs, 0)
        f1s.append(cs[idx - 1].unsqueeze(0) ** (-alpha.unsqueeze(1)))
        k = torch.nonzero(drop.abs() > 0).flatten()
        if k.numel() == 0:
            f2s.append(torch.zeros_like(f1s[-1]))
            continue
        area = cs[idx - 1].unsqueeze(1) - (cs[k] - lrs[k]).unsqueeze(0)
        valid = (k.unsqueeze(0) <= (idx - 1).unsqueeze(1)).to(DT)
        x = (lrs[k].unsqueeze(0) ** (-gamma.view(-1, 1))).unsqueeze(1) * area.unsqueeze(0)
        g = 1 - (c.view(-1, 1, 1) * x + 1) ** (-beta.view(-1, 1, 1))
        f2s.append((g * valid.unsqueeze(0) * drop[k].view(1, 1, -1)).sum(-1))
    return torch.cat(f1s, 1), torch.cat(f2s, 1)


def _solve3(f1, f2, y, w):
    """Weighted least squares of ``y ~ L0 + A f1 - B f2`` with ``A, B >= 0``, per row."""
    x = torch.stack([torch.ones_like(f1), f1, -f2], -1)
    best_sse = torch.full((f1.shape[0],), math.inf, dtype=DT)
    best = torch.zeros(f1.shape[0], 3, dtype=DT)
    for active in ([0, 1, 2], [0, 1], [0, 2], [0]):
        xa = x[..., active] * w.sqrt().view(1, -1, 1)
        xtx = (xa.transpose(1, 2) @ xa).nan_to_num(posinf=0.0, neginf=0.0)
        xty = (xa.transpose(1, 2) @ (y * w.sqrt()).view(1, -1, 1)).nan_to_num()
        coef = torch.zeros_like(best)
        coef[:, active] = (torch.linalg.pinv(xtx) @ xty).squeeze(-1)
        sse = ((((x * coef.unsqueeze(1)).sum(-1) - y) ** 2) * w).sum(-1)
        ok = (coef[:, 1] >= 0) & (coef[:, 2] >= 0) & sse.isfinite()
        better = ok & (sse < best_sse)
        best_sse = torch.where(better, sse, best_sse)
        best = torch.where(better.unsqueeze(1), coef, best)
    return best, best_sse


def mpl_fit(series, y: torch.Tensor) -> dict[str, float]:
    w = 1.0 / y**2
    grid = torch.cartesian_prod(
        torch.logspace(math.log10(0.03), math.log10(2.0), 10, dtype=DT),
        torch.logspace(-3, 3, 13, dtype=DT),
        torch.tensor([0.3, 0.6, 1.0, 2.0], dtype=DT),
        torch.tensor([0.0, 0.4, 0.8], dtype=DT),
    )
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for chunk in grid.split(256):
        coef, sse = _solve3(*mpl_features(series, *chunk.T), y, w)
        i = int(sse.argmin())
        if best is None or sse[i] < best[0]:
            best = (float(sse[i]), chunk[i], coef[i])
    assert best is not None
    sse0, nl, coef = best
    raw = torch.tensor(
        [
            float(coef[0]),
            math.log(max(float(coef[1]), 1e-12)),
            math.log(float(nl[0])),
            math.log(max(float(coef[2]), 1e-12)),
            math.log(float(nl[1])),
            math.log(float(nl[2])),
            float(nl[3]),
        ],
        dtype=DT,
        requires_grad=True,
    )

    def unpack(r):
        return r[0], r[1].exp(), r[2].exp(), r[3].exp(), r[4].exp(), r[5].exp(), r[6].clamp(0, 1.5)

    def sse_of(r):
        l0, a, alpha, b, c, beta, gamma = unpack(r)
        f1, f2 = mpl_features(series, alpha.view(1), c.view(1), beta.view(1), gamma.view(1))
        return (((l0 + a * f1[0] - b * f2[0]) - y) ** 2 * w).sum()

    opt = torch.optim.LBFGS([raw], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = sse_of(raw)
        loss.backward()
        return loss

    try:
        opt.step(closure)
        sse1 = float(sse_of(raw.detach()))
    except (RuntimeError, ZeroDivisionError):  # a failed line search keeps the grid's point
        sse1 = math.inf
    names = ("l0", "a", "alpha", "b", "c", "beta", "gamma")
    if sse1 < sse0:
        return {n: float(v) for n, v in zip(names, unpack(raw.detach()))} | {"sse": sse1}
    l0, a, b = (float(v) for v in coef)
    alpha, c, beta, gamma = (float(v) for v in nl)
    return dict(zip(names, (l0, a, alpha, b, c, beta, gamma))) | {"sse": sse0}


def mpl_predict(p: dict[str, float], lrs: np.ndarray) -> float:
    one = [torch.tensor([p[k]], dtype=DT) for k in ("alpha", "c", "beta", "gamma")]
    f1, f2 = mpl_features([(lrs, np.array([len(lrs)]))], *one)
    return float(p["l0"] + p["a"] * f1[0, 0] - p["b"] * f2[0, 0])


# -------------------------------------------------------------------- nqm


def exact_curve(lrs: np.ndarray, spec: Any) -> np.ndarray:
    return sgd_expected_loss(torch.tensor(lrs), spec)[1:].numpy()


def nqm() -> None:
    spec = _problem().spec
    opt = reference(T)["optimal_expected_loss"]
    plans = [(s, f) for s in SHAPES for f in FRACS]
    print(f"S0, T = {T}, optimum {opt:.5f}")
    for eta in (0.8, 1.4, 1.7):
        exact = np.array([exact_curve(plan(eta, s, f), spec)[-1] for s, f in plans])
        hs = bands(eta, T)

        def verdict(pred: np.ndarray, how: str, seconds: float, exact=exact, eta=eta) -> None:
            err = np.abs(pred / exact - 1)
            pick, best = int(pred.argmin()), int(exact.argmin())
            fixed = exact[plans.index(("1-sqrt", 0.5))] / opt
            print(
                f"  hold {eta}, {how}: forecast error median {np.median(err):.0%} max "
                f"{err.max():.0%}, picks {plans[pick]} -> {exact[pick] / opt:.2f}x opt "
                f"(best plan {plans[best]} {exact[best] / opt:.2f}x, 1-sqrt 50% "
                f"{fixed:.2f}x; fit {seconds:.1f} s)"
            )

        whole = [plan(eta, "linear", 1e-9), plan(eta, "linear", 0.2), plan(eta, "cosine", 1.0)]
        idx = np.arange(1, T + 1, 25)
        series = [(lrs, idx) for lrs in whole]
        y = np.concatenate([exact_curve(lrs, spec)[idx - 1] for lrs in whole])
        start = time.time()
        p = mpl_fit(series, torch.tensor(y))
        took = time.time() - start
        pred = np.array([mpl_predict(p, plan(eta, s, f)) for s, f in plans])
        verdict(pred, "MPL, 3 whole runs", took)
        start = time.time()
        coef = spectral_fit(series, y, hs)
        took = time.time() - start
        none = np.array([])
        pred = np.array([spectral_forecast(coef, hs, none, plan(eta, s, f)) for s, f in plans])
        verdict(pred, "spectral, 3 whole runs", took)
        for at in (0.2, 0.3, 0.5):
            t0 = round(at * T)
            series, ys = [], []
            for j in range(4):
                lr = eta / 2**j
                lrs = np.concatenate([np.full(100, lr), lr * decay("linear", 100)])
                idx = np.arange(BIN, 201, BIN)
                series.append((lrs, idx))
                ys.append(exact_curve(lrs, spec)[idx - 1])
            hold = np.full(t0, eta)
            idx = np.arange(BIN, t0 + 1, BIN)
            series.append((hold, idx))
            ys.append(exact_curve(hold, spec)[idx - 1])
            start = time.time()
            coef = spectral_fit(series, np.concatenate(ys), hs)
            took = time.time() - start
            pred = np.array(
                [spectral_forecast(coef, hs, hold, plan(eta, s, f)[t0:]) for s, f in plans]
            )
            verdict(pred, f"spectral, race + hold to {at:.0%} of T", took)


# ------------------------------------------------------------------ truth


def _binned(lrs: list[float], losses: list[float]) -> tuple[np.ndarray, np.ndarray]:
    ls = np.asarray(losses, dtype=float)
    n = len(ls) // BIN
    return np.maximum(np.arange(n) * BIN + BIN // 2, 1), ls[: n * BIN].reshape(n, BIN).mean(1)


def truth(pattern: str) -> None:
    by: dict[str, list[tuple[float, float, float]]] = {}
    for path in sorted(glob.glob(pattern)):
        r: dict[str, Any] = json.loads(Path(path).read_text())
        total, eta = r["T"], r["eta"]
        hs = bands(eta, total)
        series, ys = [], []
        for b in r["branches"]:
            idx, y = _binned(b["lrs"], b["losses"])
            series.append((np.asarray(b["lrs"]), idx))
            ys.append(y)
        hold = np.asarray(r["hold"]["lrs"])
        hidx, hy = _binned(r["hold"]["lrs"], r["hold"]["losses"])
        tail = max(10, total // 50)
        final = {d["start"]: float(np.median(d["losses"][-tail:])) for d in r["decays"]}
        val = {d["start"]: d["val"] for d in r["decays"]}
        starts = sorted(final)
        for tc in starts[:-1]:
            keep = hidx <= tc
            seen = series + [(hold[:tc], hidx[keep])]
            coef = spectral_fit(seen, np.concatenate(ys + [hy[keep]]), hs)
            pred = {}
            for d in r["decays"]:
                if d["start"] >= tc:
                    rest = np.concatenate([np.full(d["start"] - tc, eta), d["lrs"]])
                    pred[d["start"]] = spectral_forecast(coef, hs, hold[:tc], rest)
            err = statistics.median(abs(pred[s] / final[s] - 1) for s in pred)
            pick = min(pred, key=pred.__getitem__)
            best_val = min(v for s, v in val.items() if s >= tc)
            by.setdefault(r["workload"], []).append((tc / total, err, val[pick] / best_val))
    print("| workload | fit at (of T) | forecast error, median (max) | val of pick / best |")
    print("|---|---|---|---|")
    for w, rows in by.items():
        for at in sorted({a for a, _, _ in rows}):
            errs = [e for a, e, _ in rows if a == at]
            ratio = [q for a, _, q in rows if a == at]
            print(
                f"| {w} | {at:.2f} | {statistics.median(errs):.0%} ({max(errs):.0%}) | "
                f"{statistics.median(ratio):.3f} ({max(ratio):.3f}) |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("nqm", "truth"))
    parser.add_argument("--runs", default=str(TRUTH_DIR / "*.json"), help="decay_truth files")
    args = parser.parse_args(argv)
    nqm() if args.command == "nqm" else truth(args.runs)


if __name__ == "__main__":
    main()
