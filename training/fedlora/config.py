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


# Why `secagg: true` is refused. Flower 1.42's SecAgg+ (flwr.server.workflow.SecAggPlusWorkflow with
# flwr.client.mod.secaggplus_mod on the banks) runs only on Flower's legacy Strategy path:
# - the workflow must be called with a LegacyContext (a Strategy, a ClientManager of ClientProxies, the
#   round number and parameters in context.state) and runs a whole fit round itself: the Strategy's
#   configure_fit picks the banks, four protocol stages follow, the Strategy's aggregate_fit gets the
#   unmasked result. kofin's round loop (server.run_round: its own messages, per-bank replies, drop
#   accounting, checkpoint and resume per round) would have to become a Strategy driven by Flower;
# - secaggplus_mod speaks the legacy FitIns/FitRes records (an ordered list of unnamed arrays), not the
#   named adapter ArrayRecord kofin's ClientApp sends and the server checks tensor by tensor;
# - the server learns only the sample-weighted sum, so aggregation.method svd (which needs every bank's
#   own B·A) cannot run under it, and every tensor is clipped to +-clipping_range before quantisation.
SECAGG_UNAVAILABLE = (
    "secagg: true is not supported by kofin fedlora yet: Flower's SecAgg+ (SecAggPlusWorkflow + "
    "secaggplus_mod) runs only on Flower's legacy Strategy round loop, not on kofin's per-round loop with its "
    "named adapter tensors, drop accounting and resume. Set secagg: false; for privacy against the server use "
    "differential_privacy.enabled: true (each bank clips and noises its update before sending it)"
)


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
    secagg: bool = Field(
        default=False,
        description="Flower's SecAgg+ secure aggregation (the server sees only the sum of the banks' masked "
        "adapters). Not available in kofin fedlora yet: must stay false (see SECAGG_UNAVAILABLE in config.py).",
    )
    audit_server_opens: bool = Field(
        default=True,
        description="Record every file the server process opens during the run (server_opened_files.txt in the run), "
        "so an auditor can check no bank's data was among them.",
    )

    @field_validator("secagg")
    @classmethod
    def _no_secagg_yet(cls, secagg: bool) -> bool:
        if secagg:
            raise ValueError(SECAGG_UNAVAILABLE)
        return secagg

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
