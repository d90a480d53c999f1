"""Client-side differential privacy: each bank clips its round update and adds Gaussian noise itself.

Run as: a library (the bank calls `privatize_update` before replying; the server calls
`PrivacyLedger.record_round` after each round to report (epsilon, delta)).

What is protected: a bank's whole contribution to one round (institution-level DP, as in
DP-FedAvg). The bank sends global + clip(Δ, C) + N(0, (zC)²) instead of its trained adapter, so
the server, SecAgg or not, only ever sees the noised update. Each round a bank takes part is one
Gaussian mechanism with sensitivity C and noise multiplier z; the rounds compose, and Opacus' RDP
accountant turns the composition into the epsilon at the configured delta. Noise is added by the
bank, not sampled server-side, so no amplification by sampling is claimed (sample rate 1).
With DP on, banks are averaged with equal weights: a sample-weighted mean would let one bank's
update exceed the clip bound's share and would publish each bank's row count in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AdapterArrays = dict[str, np.ndarray]


def privatize_update(
    local: AdapterArrays, global_: AdapterArrays, *, clip_norm: float, noise_multiplier: float, seed: int
) -> tuple[AdapterArrays, dict[str, float]]:
    """global + clipped, noised (local - global), and the update's norm before and after clipping."""
    names = sorted(local)
    delta = {n: local[n].astype(np.float64) - global_[n].astype(np.float64) for n in names}
    norm = float(np.sqrt(sum(float((d**2).sum()) for d in delta.values())))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    rng = np.random.default_rng(seed)
    sigma = noise_multiplier * clip_norm
    out = {
        n: (global_[n].astype(np.float64) + delta[n] * scale + rng.normal(0.0, sigma, size=delta[n].shape)).astype(
            local[n].dtype
        )
        for n in names
    }
    return out, {"update_norm": norm, "clipped_norm": norm * scale}


@dataclass
class PrivacyLedger:
    """(epsilon, delta) per bank, composed over the rounds it took part in."""

    noise_multiplier: float
    delta: float
    history: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # bank -> [(z, q), ...]

    def record_round(self, banks: list[str]) -> dict[str, float]:
        """Add one round for these banks; return each bank's epsilon so far."""
        for bank in banks:
            self.history.setdefault(bank, []).append((self.noise_multiplier, 1.0))
        return {bank: self.epsilon(bank) for bank in banks}

    def epsilon(self, bank: str) -> float:
        from opacus.accountants import RDPAccountant

        accountant = RDPAccountant()
        for z, q in self.history.get(bank, []):
            accountant.step(noise_multiplier=z, sample_rate=q)
        return float(accountant.get_epsilon(delta=self.delta)) if self.history.get(bank) else 0.0

    def to_json(self) -> dict[str, list[list[float]]]:
        return {bank: [list(s) for s in steps] for bank, steps in self.history.items()}

    @classmethod
    def from_json(cls, data: dict[str, list[list[float]]], noise_multiplier: float, delta: float) -> PrivacyLedger:
        ledger = cls(noise_multiplier, delta)
        ledger.history = {bank: [(float(z), float(q)) for z, q in steps] for bank, steps in data.items()}
        return ledger
