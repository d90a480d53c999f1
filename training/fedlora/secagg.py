"""A federated round under Flower's SecAgg+: the server learns the weighted mean, never one bank's adapter.

Run as: a library of both sides. The server (server.run_round) calls `secure_round` for every round
when `secagg.enabled`; each bank's ClientApp wears `secagg_when_asked`, which hands SecAgg+ messages
to Flower's `secaggplus_mod` and everything else straight to kofin's train handler.

Flower's SecAggPlusWorkflow is written for its legacy Strategy loop: it asks a Strategy whom to
train (configure_fit), runs its four stages (setup, share keys, collect masked vectors, unmask)
and hands the unmasked mean to Strategy.aggregate_fit. kofin keeps its own round loop (bank
selection, drop accounting, checkpoint and resume), so each round is one call of the workflow with
a one-round Strategy that asks exactly the banks kofin selected and keeps what comes back. The
legacy FitIns/FitRes records carry an ordered list of unnamed arrays: the tensor names travel in
the fit config and the bank puts its adapter back in that order.

Weighting: each bank scales its adapter by num_examples / max_weight before quantising, and the
server divides the unmasked sum by the sum of those factors, so the result is the sample-weighted
FedAvg mean up to quantisation (one step is 2 * clipping_range / quantization_range per bank).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kofin.training.fedlora.client import replying_bank
from kofin.training.fedlora.config import FedLoraConfig

KEY_TENSORS = "tensor-names"  # fit config: the adapter's tensor names, in the order of the arrays
LEGACY_PARAMETERS = "fitins.parameters"  # where a legacy FitIns keeps its arrays (flwr.compat)


@dataclass
class BankResult:
    """What the server knows of one bank after a round: its metrics, never its adapter under SecAgg+."""

    node_id: int
    bank: str
    metrics: dict[str, float]
    data_sha256: str
    bytes_sent: int
    arrays: dict[str, np.ndarray] | None = None  # plain rounds only


@dataclass
class SecureRound:
    mean: dict[str, np.ndarray]
    banks: list[BankResult]
    dropped: list[dict[str, Any]]
    bytes_down: int
    plain_arrays_seen: int  # adapter arrays that reached the server unmasked: 0 when SecAgg+ works


@dataclass
class _Traffic:
    """The grid as the workflow uses it, counting what each bank sent and any failure it reported."""

    grid: Any
    bytes_from: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    bytes_to: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    plain_arrays: int = 0

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        sent_to = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in messages}
        self.bytes_to += sum(_content_bytes(m.content) for m in messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            node = replying_bank(reply, sent_to)
            if reply.has_error():
                self.errors[node] = str(reply.error.reason)
                continue
            self.bytes_from[node] += _content_bytes(reply.content)
            self.plain_arrays += sum(len(rec) for rec in reply.content.array_records.values())
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


def _content_bytes(content: Any) -> int:
    arrays = sum(rec.count_bytes() for rec in content.array_records.values())
    return int(arrays) + sum(_config_bytes(rec) for rec in content.config_records.values())


def _config_bytes(record: Any) -> int:
    """Bytes of a ConfigRecord's keys and values (flwr's own count_bytes fails on an empty list, which
    SecAgg+ sends to a bank whose neighbours are gone)."""
    total = 0
    for key, value in record.items():
        total += len(key)
        for item in value if isinstance(value, list) else [value]:
            total += len(item) if isinstance(item, (bytes, str)) else 1 if isinstance(item, bool) else 8
    return total


def _round_strategy(selected: list[int], grid: Any, fit_ins: Any) -> Any:
    """A Strategy for one round: train exactly `selected`, keep the results (the unmasked mean)."""
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.strategy import Strategy

    run_id = int(getattr(getattr(grid, "run", None), "run_id", 0) or 0)

    class OneRound(Strategy):
        results: list[Any] | None = None
        failures: list[Any] = []

        def initialize_parameters(self, client_manager: Any) -> None:
            return None

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[Any]:
            return [(GridClientProxy(node, grid, run_id), fit_ins) for node in selected]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> tuple[Any, dict[str, Any]]:
            self.results, self.failures = list(results), list(failures)
            return (results[0][1].parameters if results else None), {}

        def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list[Any]:
            return []

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> tuple[None, dict[str, Any]]:
            return None, {}

        def evaluate(self, server_round: int, parameters: Any) -> None:
            return None

    return OneRound()


def secure_round(
    grid: Any, cfg: FedLoraConfig, server_round: int, global_arrays: dict[str, np.ndarray], selected: list[int]
) -> SecureRound:
    """One round of SecAgg+ over the banks kofin selected: the weighted mean and each bank's metrics."""
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    from kofin.training.fedlora import client as proto

    sa = cfg.secagg
    names = sorted(global_arrays)
    parameters = ndarrays_to_parameters([np.asarray(global_arrays[n]) for n in names])
    fit_config = {
        proto.KEY_ROUND: server_round,
        proto.KEY_CONFIG_JSON: proto.config_for_banks(cfg),
        KEY_TENSORS: json.dumps(names),
    }
    strategy = _round_strategy(selected, grid, FitIns(parameters, fit_config))  # type: ignore[arg-type]
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}), strategy=strategy
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(parameters, keep_input=True)
    traffic = _Traffic(grid)
    workflow = SecAggPlusWorkflow(
        num_shares=int(sa.num_shares) if sa.num_shares > 1 else sa.num_shares,
        reconstruction_threshold=(
            int(sa.reconstruction_threshold) if sa.reconstruction_threshold > 1 else sa.reconstruction_threshold
        ),
        max_weight=sa.weight_bound(cfg.differential_privacy.enabled),
        clipping_range=sa.clipping_range,
        quantization_range=sa.quantization_range,
        timeout=cfg.rounds.round_timeout_s,
    )
    workflow(traffic, context)  # type: ignore[arg-type]  # the grid, counted
    results = strategy.results or []
    banks: list[BankResult] = []
    for proxy, fit_res in results:
        metrics = dict(fit_res.metrics)
        banks.append(
            BankResult(
                node_id=int(proxy.node_id),
                bank=str(metrics.pop("bank")),
                data_sha256=str(metrics.pop("data-sha256")),
                metrics={k: float(v) for k, v in metrics.items()}
                | {proto.KEY_NUM_EXAMPLES: float(fit_res.num_examples)},
                bytes_sent=traffic.bytes_from[int(proxy.node_id)],
            )
        )
    returned = {b.node_id for b in banks}
    dropped = [
        {"node_id": n, "reason": traffic.errors.get(n, "left the SecAgg+ protocol (no reply within the round)")}
        for n in selected
        if n not in returned
    ]
    mean: dict[str, np.ndarray] = {}
    if results:
        unmasked = parameters_to_ndarrays(results[0][1].parameters)
        mean = {n: a.astype(global_arrays[n].dtype) for n, a in zip(names, unmasked, strict=True)}
    return SecureRound(mean, banks, dropped, traffic.bytes_to // max(1, len(selected)), traffic.plain_arrays)


# ---------------------------------------------------------------- the bank's side


def secagg_when_asked(msg: Any, context: Any, call_next: Any) -> Any:
    """A ClientApp mod: SecAgg+ messages go through Flower's secaggplus_mod, the rest straight on."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def is_secure_fit(content: Any) -> bool:
    """Whether a train message is SecAgg+'s legacy FitIns (else kofin's named adapter record)."""
    return LEGACY_PARAMETERS in content.array_records


def read_secure_fit(content: Any) -> tuple[FedLoraConfig, dict[str, np.ndarray], int]:
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from kofin.training.fedlora import client as proto

    fit_ins = compat.recorddict_to_fitins(content, keep_input=True)
    cfg = FedLoraConfig.model_validate(json.loads(str(fit_ins.config[proto.KEY_CONFIG_JSON])))
    names = json.loads(str(fit_ins.config[KEY_TENSORS]))
    arrays = dict(zip(names, parameters_to_ndarrays(fit_ins.parameters), strict=True))
    return cfg, arrays, int(str(fit_ins.config[proto.KEY_ROUND]))


def secure_fit_reply(
    cfg: FedLoraConfig,
    bank: str,
    arrays: dict[str, np.ndarray],
    metrics: dict[str, float],
    digest: str,
    names: list[str],
) -> Any:
    """The legacy FitRes secaggplus_mod masks: the adapter in the server's order, as float64 so the
    mod's scaling and quantisation lose nothing to float32 rounding; refuses values it would clip."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    from kofin.training.fedlora import client as proto
    from kofin.training.fedlora.client import BankDataError

    weight = metrics[proto.KEY_NUM_EXAMPLES]
    bound = cfg.secagg.weight_bound(cfg.differential_privacy.enabled)
    if weight > bound:
        raise BankDataError(
            f"bank {bank}: {weight:g} training chats is more than secagg.max_weight {bound:g}; raise "
            "secagg.max_weight to at least the largest bank's count"
        )
    largest = max(float(np.max(np.abs(a))) for a in arrays.values()) * weight / bound
    if largest > cfg.secagg.clipping_range:
        raise BankDataError(
            f"bank {bank}: a weighted adapter value {largest:.3g} lies outside secagg.clipping_range "
            f"{cfg.secagg.clipping_range:g} and would be clipped; raise secagg.clipping_range"
        )
    fit_res = FitRes(
        status=Status(code=Code.OK, message="ok"),
        parameters=ndarrays_to_parameters([arrays[n].astype(np.float64) for n in names]),
        num_examples=int(weight),
        metrics={**{k: float(v) for k, v in metrics.items()}, "bank": bank, "data-sha256": digest},
    )
    return compat.fitres_to_recorddict(fit_res, keep_input=False)
