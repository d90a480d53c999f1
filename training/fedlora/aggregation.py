"""How the server combines the banks' adapters: FedAvg of the tensors, or the mean update re-factorised.

Run as: a library (training/fedlora/server.py calls `aggregate` once per round).

Why two methods. A LoRA layer's update is the product ΔW = B·A (times the fixed scale alpha/r).
FedAvg averages A and B separately, and the product of the means is not the mean of the products:

    mean(B_k) · mean(A_k) = (1/K²) Σ_j Σ_k B_j A_k   ≠   (1/K) Σ_k B_k A_k

The cross terms B_j A_k (j ≠ k) pair one bank's B with another bank's A; they vanish only when all
banks share A (or B). FedAvg is still the usual default: cheap, and close when the banks' adapters
start from the same global adapter and drift little in a round. `svd` is exact for the product:
it forms the sample-weighted mean of B_k·A_k, layer by layer, and factorises it back into rank-r
B', A' by truncated SVD. The mean of K rank-r updates has rank <= K·r; when it is <= r (e.g. the
banks share A) B'·A' equals it exactly, otherwise B'·A' is its best rank-r approximation
(Eckart-Young) and the relative residual goes into the manifest. The SVD runs on the K·r × K·r core
of the stacked factors (QR of [w_1 B_1 … w_K B_K] and of [A_1; …; A_K]), never on the d_out × d_in
matrix, so it stays cheap at EEVE's 4096 × 14336 layers. Tensors that are not LoRA A/B pairs (DoRA's
magnitude vectors) are sample-weighted means in both methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AdapterArrays = dict[str, np.ndarray]
LORA_A, LORA_B = "lora_A.weight", "lora_B.weight"


@dataclass
class Aggregated:
    arrays: AdapterArrays
    # svd only: per layer, ||mean(B·A) - B'·A'||_F / ||mean(B·A)||_F (0 when exact).
    residuals: dict[str, float] = field(default_factory=dict)

    @property
    def max_residual(self) -> float | None:
        return max(self.residuals.values()) if self.residuals else None


def _weights(weights: list[float]) -> np.ndarray:
    w: np.ndarray = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"aggregation weights must be non-negative with a positive sum, got {weights}")
    return w / w.sum()


def _same_names(adapters: list[AdapterArrays]) -> list[str]:
    if not adapters:
        raise ValueError("nothing to aggregate: no adapter replies")
    names = sorted(adapters[0])
    for i, a in enumerate(adapters[1:], start=1):
        if sorted(a) != names:
            raise ValueError(f"adapter {i} has other tensors than adapter 0; every bank must train the same adapter")
    return names


def fedavg(adapters: list[AdapterArrays], weights: list[float]) -> AdapterArrays:
    """Sample-weighted mean of every tensor: Σ_k n_k θ_k / Σ_k n_k."""
    w = _weights(weights)
    names = _same_names(adapters)
    out = {}
    for name in names:
        stacked = np.stack([a[name].astype(np.float64) for a in adapters])
        out[name] = np.tensordot(w, stacked, axes=1).astype(adapters[0][name].dtype)
    return out


def lora_pairs(names: list[str]) -> dict[str, tuple[str, str]]:
    """layer prefix -> (A name, B name) for every complete LoRA pair."""
    pairs = {}
    for name in names:
        if name.endswith(LORA_A):
            prefix = name[: -len(LORA_A)]
            if prefix + LORA_B in names:
                pairs[prefix] = (name, prefix + LORA_B)
    return pairs


def mean_product_factors(
    a_list: list[np.ndarray], b_list: list[np.ndarray], w: np.ndarray, rank: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """B', A' of rank `rank` with B'·A' the best approximation of Σ w_k B_k A_k, and the relative residual."""
    b_stack = np.concatenate(
        [wk * b.astype(np.float64) for wk, b in zip(w, b_list, strict=True)], axis=1
    )  # d_out × K·r
    a_stack = np.concatenate([a.astype(np.float64) for a in a_list], axis=0)  # K·r × d_in
    qb, rb = np.linalg.qr(b_stack)
    qa, ra = np.linalg.qr(a_stack.T)
    u, s, vt = np.linalg.svd(rb @ ra.T)  # the mean update is qb · (rb ra^T) · qa^T
    total = float(np.sqrt((s**2).sum()))
    kept = min(rank, len(s))
    residual = float(np.sqrt((s[kept:] ** 2).sum()) / total) if total > 0 else 0.0
    root = np.sqrt(s[:kept])
    b_new = (qb @ u[:, :kept]) * root
    a_new = (root[:, None] * vt[:kept]) @ qa.T
    if kept < rank:  # fewer singular directions than the rank: pad with zeros, the product is unchanged
        b_new = np.pad(b_new, ((0, 0), (0, rank - kept)))
        a_new = np.pad(a_new, ((0, rank - kept), (0, 0)))
    return b_new, a_new, residual


def svd_aggregate(adapters: list[AdapterArrays], weights: list[float]) -> Aggregated:
    w = _weights(weights)
    names = _same_names(adapters)
    out = fedavg(adapters, weights)  # the non-pair tensors (DoRA magnitudes); pairs are replaced below
    residuals = {}
    for prefix, (a_name, b_name) in lora_pairs(names).items():
        rank = adapters[0][a_name].shape[0]
        b_new, a_new, residual = mean_product_factors(
            [a[a_name] for a in adapters], [a[b_name] for a in adapters], w, rank
        )
        out[a_name] = a_new.astype(adapters[0][a_name].dtype)
        out[b_name] = b_new.astype(adapters[0][b_name].dtype)
        residuals[prefix.rstrip(".")] = residual
    return Aggregated(out, residuals)


def aggregate(method: str, adapters: list[AdapterArrays], weights: list[float]) -> Aggregated:
    if method == "fedavg":
        return Aggregated(fedavg(adapters, weights))
    if method == "svd":
        return svd_aggregate(adapters, weights)
    raise ValueError(f"aggregation.method {method!r}: use fedavg or svd")
