"""Config of `kofin fedlora`: the SFT stage's adapter settings, trained by banks that never pool data.

Run as:
    kofin fedlora --config configs/fedlora/tiny.yaml [key.path=value ...]

The adapter (`method`, `lora`) and the chat-data format are the ones `kofin sft` uses, from the
same models (training/sft_config.py), so a federated arm and a pooled arm of a study differ only
in where the data sits. What is federated-only lives here: the banks, the rounds, how the server
aggregates, the privacy options and which Flower engine runs it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kofin.config import KofinModel, ResolvedPath, StageConfig
from kofin.training.sft_config import LoraSettings, Method, MethodName, Schedule

BANK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class Bank(KofinModel):
    """One institution: a SuperNode in deployment, a virtual SuperNode in simulation."""

    name: str = Field(description="Bank id (lowercase letters, digits, '-', '_'); the SuperNode announces it.")
    data: ResolvedPath | None = Field(
        default=None,
        description="Simulation only: the bank's local chat data, a `kofin data` run (its sft/train.jsonl) or a "
        "JSONL file of {messages:[...]} rows. In deployment the bank's SuperNode names its own data "
        "(`--node-config data=...`) and the server config holds none.",
    )
    shard: tuple[int, int] | None = Field(
        default=None,
        description="[k, n]: use only rows i with i % n == k of `data`, so demo banks sharing one file get disjoint "
        "slices; null = every row.",
    )
    max_rows: int | None = Field(default=None, ge=1, description="Use at most this many rows (after shard).")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not BANK_NAME.fullmatch(name):
            raise ValueError(f"bank name {name!r}: use lowercase letters, digits, '-' or '_', e.g. bank_a")
        return name

    @field_validator("shard")
    @classmethod
    def _shard_in_range(cls, shard: tuple[int, int] | None) -> tuple[int, int] | None:
        if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard {list(shard)}: expected [k, n] with 0 <= k < n, e.g. [0, 3]")
        return shard


class LocalTraining(Schedule):
    """What each bank does with the global adapter in one round (the SFT schedule, per round)."""

    local_steps: int | None = Field(
        default=5, ge=1, description="Optimizer steps per bank per round; null = `num_epochs` over the local slice."
    )
    sequence_len: int = Field(default=512, ge=16, description="Longer chats are truncated to this many tokens.")
    micro_batch_size: int = Field(default=2, ge=1, description="Chats per forward pass.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")


class Rounds(KofinModel):
    num_rounds: int = Field(default=3, ge=1, description="Federated rounds.")
    clients_per_round: int | None = Field(
        default=None, ge=1, description="Banks sampled per round; null = every available bank."
    )
    min_available_clients: int = Field(
        default=2,
        ge=1,
        description="A round waits for this many connected banks, and fails when fewer than this many reply.",
    )
    round_timeout_s: float = Field(
        default=1800.0, gt=0, description="Seconds a round waits for the banks' replies; a bank silent longer dropped."
    )
    wait_for_clients_s: float = Field(
        default=300.0, gt=0, description="Seconds to wait for min_available_clients banks to connect before a round."
    )


class Aggregation(KofinModel):
    method: Literal["fedavg", "svd"] = Field(
        default="fedavg",
        description="fedavg: sample-weighted mean of every adapter tensor (A, B and DoRA magnitudes), cheap, but "
        "mean(A) and mean(B) multiply to something other than the mean update mean(B·A); svd: the sample-weighted "
        "mean of each layer's update ΔW = B·A, re-factorised to rank r by truncated SVD (exact whenever that mean has "
        "rank <= r, else its best rank-r approximation; the residual is in the manifest).",
    )


class DifferentialPrivacy(KofinModel):
    """Client-side DP: each bank clips its round update and adds Gaussian noise before sending it."""

    enabled: bool = Field(default=False, description="Clip and noise every bank's update on the bank's side.")
    clip_norm: float = Field(default=1.0, gt=0, description="L2 bound C on one bank's update (all adapter tensors).")
    noise_multiplier: float = Field(
        default=1.0, gt=0, description="Gaussian noise std as a multiple of clip_norm (sigma = z * C)."
    )
    delta: float = Field(default=1e-5, gt=0, lt=1, description="delta of the (epsilon, delta) reported per round.")


class Engine(KofinModel):
    kind: Literal["simulation", "deployment"] = Field(
        default="simulation",
        description="simulation: Flower's simulation engine on this machine, one virtual SuperNode per bank; "
        "deployment: a SuperLink and one SuperNode per institution (`flower-superlink`, `flower-supernode`), "
        "the run submitted with `flwr run`.",
    )
    superlink: str = Field(
        default="127.0.0.1:9093",
        description="deployment: host:port of the SuperLink that `flwr run` submits to (its --port).",
    )
    insecure: bool = Field(
        default=False, description="deployment: plain HTTP to the SuperLink (tests on 127.0.0.1 only); default TLS."
    )
    root_certificates: ResolvedPath | None = Field(
        default=None, description="deployment: PEM CA bundle that signed the SuperLink's certificate."
    )
    cpus_per_client: float = Field(
        default=1.0, gt=0, description="simulation: CPU cores reserved per virtual SuperNode (Ray resources)."
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="simulation: cores Ray may use in all; null = Ray's own count."
    )

    @field_validator("superlink")
    @classmethod
    def _host_port(cls, address: str) -> str:
        if not re.fullmatch(r"[^\s:]+:\d+|\[[0-9a-fA-F:]+\]:\d+", address):
            raise ValueError(f"superlink {address!r} must be host:port, e.g. 10.0.0.5:9093")
        return address


class SecureAggregation(KofinModel):
    """Flower's SecAgg+: the server learns only the sample-weighted mean of the banks' adapters.

    Each bank quantises its adapter (scaled by its weight) to integers, adds masks agreed with its
    neighbours, and secret-shares the mask seeds; the masks cancel in the sum, and the seeds of a bank
    that dropped out are rebuilt from the shares of the others (training/fedlora/secagg.py)."""

    enabled: bool = Field(default=False, description="Run every round as a SecAgg+ round (fedavg only).")
    num_shares: float = Field(
        default=1.0,
        gt=0,
        description="Neighbours each bank secret-shares its keys with: a fraction of the round's banks (<= 1) or a "
        "count (> 2). More shares tolerate more drop-outs at more cost.",
    )
    reconstruction_threshold: float = Field(
        default=0.6,
        gt=0,
        description="Shares needed to rebuild a bank's keys: a fraction of num_shares (<= 1) or a count. Higher is "
        "more private (more banks must collude), lower tolerates more drop-outs; never below 2.",
    )
    clipping_range: float = Field(
        default=8.0,
        gt=0,
        description="Adapter values are quantised on [-clipping_range, clipping_range]; a bank whose weighted adapter "
        "falls outside refuses the round (no silent clipping).",
    )
    max_weight: float = Field(
        default=1000.0,
        gt=0,
        description="Upper bound of any bank's FedAvg weight (its training chats); quantisation is finest when close "
        "to the largest bank's count. Under differential privacy every weight is 1 and 1 is used.",
    )
    quantization_range: int = Field(
        default=2**22,
        ge=2**10,
        le=2**28,
        description="Integer levels of the quantisation; the masked sums are taken modulo 2**32, so at most "
        "2**32 / quantization_range banks per round.",
    )

    @field_validator("num_shares")
    @classmethod
    def _share_count(cls, n: float) -> float:
        if n > 1 and (n != int(n) or n <= 2):
            raise ValueError(f"num_shares {n:g}: a fraction of the round's banks (0 < x <= 1) or a whole count above 2")
        return n

    @field_validator("reconstruction_threshold")
    @classmethod
    def _threshold_count(cls, t: float) -> float:
        if t > 1 and t != int(t):
            raise ValueError(f"reconstruction_threshold {t:g}: a fraction of num_shares (<= 1) or a whole count")
        return t

    @model_validator(mode="after")
    def _threshold_below_shares(self) -> SecureAggregation:
        if 1 < self.num_shares <= self.reconstruction_threshold:
            raise ValueError(
                f"reconstruction_threshold {self.reconstruction_threshold:g} must be below num_shares "
                f"{self.num_shares:g}"
            )
        return self

    def weight_bound(self, differential_privacy: bool) -> float:
        return 1.0 if differential_privacy else self.max_weight


class FedLoraConfig(StageConfig):
    base_model: ResolvedPath | None = Field(
        default=None, description="Local Hugging Face model folder; null = kofin's embedded tiny EEVE-shaped model."
    )
    method: MethodName = Field(
        default="lora",
        description="As `kofin sft`: lora, qlora (4-bit NF4 base), dora, rslora, or a combination such as "
        "qlora+rslora. DoRA's magnitude vectors are aggregated like the other adapter tensors.",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Adapter settings (as `kofin sft`).")
    training: LocalTraining = Field(default_factory=LocalTraining, description="Each bank's local training per round.")
    banks: list[Bank] = Field(min_length=1, description="The institutions taking part.")
    rounds: Rounds = Field(default_factory=Rounds, description="Rounds, sampling and drop tolerance.")
    aggregation: Aggregation = Field(default_factory=Aggregation, description="How the server combines adapters.")
    differential_privacy: DifferentialPrivacy = Field(
        default_factory=DifferentialPrivacy, description="Client-side DP; off by default."
    )
    engine: Engine = Field(default_factory=Engine, description="Which Flower engine runs the federation.")
    secagg: SecureAggregation = Field(
        default_factory=SecureAggregation,
        description="Flower's SecAgg+ secure aggregation: the server sees only the weighted mean of the banks' masked "
        "adapters, never one bank's. `secagg: true` is short for `secagg: {enabled: true}`.",
    )
    audit_server_opens: bool = Field(
        default=True,
        description="Record every file the server process opens during the run (server_opened_files.txt in the run), "
        "so an auditor can check no bank's data was among them.",
    )

    @field_validator("secagg", mode="before")
    @classmethod
    def _secagg_switch(cls, secagg: object) -> object:
        return {"enabled": secagg} if isinstance(secagg, bool) else secagg

    @model_validator(mode="after")
    def _consistent(self) -> FedLoraConfig:
        names = [b.name for b in self.banks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"banks: {twice} named twice; give every bank its own name")
        r = self.rounds
        if r.min_available_clients > len(self.banks):
            raise ValueError(
                f"rounds.min_available_clients {r.min_available_clients} > {len(self.banks)} banks; lower it or "
                "add banks"
            )
        if r.clients_per_round is not None and not r.min_available_clients <= r.clients_per_round <= len(self.banks):
            raise ValueError(
                f"rounds.clients_per_round {r.clients_per_round} must lie between min_available_clients "
                f"({r.min_available_clients}) and the number of banks ({len(self.banks)})"
            )
        if self.secagg.enabled:
            if self.aggregation.method != "fedavg":
                raise ValueError(
                    f"secagg.enabled with aggregation.method {self.aggregation.method}: under SecAgg+ the server "
                    "learns only the weighted sum of the adapters, not each bank's B·A that svd needs; use "
                    "aggregation.method: fedavg, or turn secagg off"
                )
            if r.min_available_clients < 2:
                raise ValueError(
                    "secagg.enabled needs rounds.min_available_clients >= 2: a sum of one bank's adapter is that "
                    "bank's adapter"
                )
        if self.engine.kind == "simulation":
            missing = [f"banks.{i}.data" for i, b in enumerate(self.banks) if b.data is None]
            if missing:
                raise ValueError(
                    f"engine.kind simulation needs every bank's data on this machine: set {', '.join(missing)}"
                )
        else:
            given = [f"banks.{i}.data" for i, b in enumerate(self.banks) if b.data is not None]
            if given:
                raise ValueError(
                    f"engine.kind deployment: the server never holds a bank's data path; remove {', '.join(given)} "
                    "and start each bank's SuperNode with `--node-config data=...` instead"
                )
        return self

    @property
    def parsed_method(self) -> Method:
        return Method.parse(self.method)
