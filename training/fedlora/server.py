"""The server's side: rounds of send-global-adapter, collect-bank-adapters, aggregate, checkpoint.

Run as: the ServerApp of `kofin fedlora` (simulation: a thread of `kofin fedlora`; deployment:
`kofin.training.fedlora.app:server_app`, started by the SuperLink for `flwr run`).

The server opens the base model (to seed round 1 and to write the final adapter) and its own run
directory, nothing else: banks' data paths are not in its config in deployment, and in simulation
it never opens them; with `audit_server_opens` every file this process opens is listed in the run
(server_opened_files.txt) for an auditor to check. Each completed round is checkpointed in
`<output_dir>.partial/` (global adapter + round log), so a killed server started again with the
same config resumes after the last completed round.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kofin import manifest_keys as keys
from kofin.errors import KofinError
from kofin.rundir import PARTIAL_SUFFIX, atomic_write_json, atomic_write_text, config_digest, lineage_record, open_run
from kofin.training.fedlora import adapter as adapters
from kofin.training.fedlora import client as proto
from kofin.training.fedlora.aggregation import aggregate
from kofin.training.fedlora.config import FedLoraConfig
from kofin.training.fedlora.dp import PrivacyLedger
from kofin.training.fedlora.secagg import BankResult, secure_round

STAGE = "fedlora"
STATE_FILE = "fedlora_rounds.json"  # the round log; in the finished run too
CHECKPOINT_FILE = "global_adapter.checkpoint.safetensors"  # the partial run's latest global adapter
OPENED_FILES = "server_opened_files.txt"


class FedLoraRoundError(KofinError):
    """A round that cannot complete: too few banks connected or replied."""


# ---------------------------------------------------------------- what the server process opens


class OpenAudit:
    """Every path this process opens from Python while active (an audit hook: open(), io.open, os.open).

    That is how a bank's chats would be read (kofin.data_ko.formats); files opened by native code
    (safetensors maps the model weights from Rust) do not raise the audit event."""

    _installed = False
    _active: list[OpenAudit] = []
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.paths: set[str] = set()

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and cls._active and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            for audit in cls._active:
                audit.paths.add(os.path.abspath(path))

    def __enter__(self) -> OpenAudit:
        with OpenAudit._lock:
            if not OpenAudit._installed:
                sys.addaudithook(OpenAudit._hook)  # hooks cannot be removed; an inactive one does nothing
                OpenAudit._installed = True
            OpenAudit._active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with OpenAudit._lock:
            OpenAudit._active.remove(self)


# ---------------------------------------------------------------- state of a run in progress


def resume_digest(cfg: FedLoraConfig) -> str:
    """What must be unchanged to continue after the last completed round (not timeouts, engine or audit)."""
    data = cfg.model_dump(
        mode="json",
        exclude={"engine": True, "audit_server_opens": True, "rounds": {"round_timeout_s", "wait_for_clients_s"}},
    )
    return config_digest(data)


def load_state(work: Path, digest: str) -> dict[str, Any] | None:
    path = work / STATE_FILE
    if not (path.is_file() and (work / CHECKPOINT_FILE).is_file()):
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return state if state.get("resume_digest") == digest else None


def save_checkpoint(work: Path, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
    """The global adapter, then the round log that points at it: a kill between the two repeats one round."""
    from safetensors.numpy import save_file

    tmp = work / f".{CHECKPOINT_FILE}.tmp-{os.getpid()}"
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    os.replace(tmp, work / CHECKPOINT_FILE)
    atomic_write_json(work / STATE_FILE, state)


# ---------------------------------------------------------------- one round


def wait_for_banks(grid: Any, cfg: FedLoraConfig, server_round: int) -> list[int]:
    need, deadline = cfg.rounds.min_available_clients, time.time() + cfg.rounds.wait_for_clients_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= need:
            return nodes
        if time.time() > deadline:
            raise FedLoraRoundError(
                f"round {server_round}: {len(nodes)} bank(s) connected after {cfg.rounds.wait_for_clients_s:.0f} s, "
                f"rounds.min_available_clients is {need}. Start the missing banks' SuperNodes (flower-supernode "
                "--superlink ...) or lower rounds.min_available_clients"
            )
        time.sleep(1.0)


@dataclass
class RoundOutcome:
    selected: list[int]
    banks: list[BankResult]
    dropped: list[dict[str, Any]]
    wall_s: float
    bytes_down: int  # the round's message to one bank
    mean: dict[str, np.ndarray] | None  # SecAgg+ rounds: the mean the protocol unmasked
    plain_arrays_seen: int | None = None  # SecAgg+ rounds: adapter arrays that reached the server unmasked


def select_banks(nodes: list[int], cfg: FedLoraConfig, server_round: int) -> list[int]:
    rng = np.random.default_rng([cfg.training.seed, server_round])
    k = cfg.rounds.clients_per_round or len(nodes)
    # Indices, not the ids: node ids are uint64 and numpy would turn a list of them into floats.
    return sorted(nodes[i] for i in rng.permutation(len(nodes))[: min(k, len(nodes))])


def run_round(grid: Any, cfg: FedLoraConfig, server_round: int, global_arrays: dict[str, np.ndarray]) -> RoundOutcome:
    selected = select_banks(wait_for_banks(grid, cfg, server_round), cfg, server_round)
    started = time.time()
    if cfg.secagg.enabled:
        secure = secure_round(grid, cfg, server_round, global_arrays, selected)
        outcome = RoundOutcome(
            selected, secure.banks, secure.dropped, 0.0, secure.bytes_down, secure.mean, secure.plain_arrays_seen
        )
    else:
        banks, dropped, bytes_down = plain_round(grid, cfg, server_round, global_arrays, selected)
        outcome = RoundOutcome(selected, banks, dropped, 0.0, bytes_down, None)
    outcome.wall_s = time.time() - started
    known = {b.name for b in cfg.banks}
    strangers = [b for b in outcome.banks if b.bank not in known]
    if strangers and outcome.mean is not None:  # its adapter is inside the secure sum: the round cannot stand
        raise FedLoraRoundError(
            f"round {server_round}: node {strangers[0].node_id} announces bank {strangers[0].bank!r}, which is not "
            "in banks, and its adapter is inside the SecAgg+ sum; stop that SuperNode or add the bank to banks"
        )
    outcome.dropped += [
        {"node_id": b.node_id, "reason": f"announces bank {b.bank!r}, which is not in banks"} for b in strangers
    ]
    outcome.banks = [b for b in outcome.banks if b.bank in known]
    if len(outcome.banks) < cfg.rounds.min_available_clients:
        why = "; ".join(f"node {d['node_id']}: {d['reason']}" for d in outcome.dropped) or "none failed"
        raise FedLoraRoundError(
            f"round {server_round}: {len(outcome.banks)} of {len(selected)} banks returned an adapter, fewer than "
            f"rounds.min_available_clients {cfg.rounds.min_available_clients} ({why}). The global adapter of round "
            f"{server_round - 1} is kept in {cfg.output_dir}{PARTIAL_SUFFIX}; fix or restart the failed banks and run "
            "the same command again to resume"
        )
    return outcome


def plain_round(
    grid: Any, cfg: FedLoraConfig, server_round: int, global_arrays: dict[str, np.ndarray], selected: list[int]
) -> tuple[list[BankResult], list[dict[str, Any]], int]:
    """Send the global adapter to the selected banks and take each one's adapter back."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

    record = ArrayRecord(array_dict={n: Array(np.ascontiguousarray(a)) for n, a in global_arrays.items()})
    config = ConfigRecord({proto.KEY_ROUND: server_round, proto.KEY_CONFIG_JSON: proto.config_for_banks(cfg)})
    messages = [
        Message(
            content=RecordDict({proto.ADAPTER_RECORD: record, proto.CONFIG_RECORD: config}),
            message_type=MessageType.TRAIN,
            dst_node_id=node,
        )
        for node in selected
    ]
    replies = list(grid.send_and_receive(messages, timeout=cfg.rounds.round_timeout_s))
    sent_to = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in messages}
    banks: list[BankResult] = []
    dropped: list[dict[str, Any]] = []
    answered: set[int] = set()
    for reply in replies:
        node = proto.replying_bank(reply, sent_to)
        answered.add(node)
        if reply.has_error():
            dropped.append({"node_id": node, "reason": str(reply.error.reason)})
            continue
        adapter = reply.content.array_records[proto.ADAPTER_RECORD]
        bank = reply.content.config_records[proto.BANK_RECORD]
        banks.append(
            BankResult(
                node_id=node,
                bank=str(bank["name"]),
                metrics={k: float(v) for k, v in reply.content.metric_records[proto.METRICS_RECORD].items()},
                data_sha256=str(bank["data-sha256"]),
                bytes_sent=int(adapter.count_bytes()),
                arrays={k: v.numpy() for k, v in adapter.items()},
            )
        )
    dropped += [
        {"node_id": n, "reason": f"no reply within rounds.round_timeout_s {cfg.rounds.round_timeout_s:g} s"}
        for n in selected
        if n not in answered
    ]
    return banks, dropped, record.count_bytes()


def serve_rounds(grid: Any, cfg: FedLoraConfig, *, quiet: bool = False) -> Path:
    """Every round, then the run directory; the body of the ServerApp for both engines."""
    with OpenAudit() as audit:
        return _serve(grid, cfg, audit if cfg.audit_server_opens else None, quiet=quiet)


def _serve(grid: Any, cfg: FedLoraConfig, audit: OpenAudit | None, *, quiet: bool) -> Path:
    from safetensors.numpy import load_file

    say = (lambda text: None) if quiet else (lambda text: print(f"kofin fedlora: {text}", flush=True))
    base = adapters.resolve_base_model(cfg)
    model = adapters.build_peft_model(cfg, base, for_training=False)
    digest = resume_digest(cfg)
    work = Path(str(cfg.output_dir) + PARTIAL_SUFFIX)
    state = load_state(work, digest)
    dp = cfg.differential_privacy
    with open_run(STAGE, cfg, inputs={"base_model": base}, resume=state is not None) as run:
        if state is not None:
            global_arrays = load_file(str(run.path / CHECKPOINT_FILE))
            say(f"resuming after round {state['completed_round']} from {run.path}")
            state["resumed_after_round"] = state.get("resumed_after_round", []) + [state["completed_round"]]
        else:
            global_arrays = adapters.adapter_arrays(model)
            state = {"resume_digest": digest, "completed_round": 0, "rounds": [], "privacy": {}}
        ledger = PrivacyLedger.from_json(state["privacy"], dp.noise_multiplier, dp.delta)
        for server_round in range(state["completed_round"] + 1, cfg.rounds.num_rounds + 1):
            say(f"round {server_round}/{cfg.rounds.num_rounds}: sending the global adapter")
            outcome = run_round(grid, cfg, server_round, global_arrays)
            residual = None
            if outcome.mean is not None:
                global_arrays = outcome.mean
            else:
                trained = [b.arrays for b in outcome.banks if b.arrays is not None]
                weights = [b.metrics[proto.KEY_NUM_EXAMPLES] for b in outcome.banks]
                agg = aggregate(cfg.aggregation.method, trained, weights)
                global_arrays, residual = agg.arrays, agg.max_residual
            entry = round_record(server_round, cfg, outcome, residual)
            ok, dropped = outcome.banks, outcome.dropped
            if dp.enabled:
                entry["epsilon"] = ledger.record_round([b.bank for b in ok])
                entry["delta"] = dp.delta
                state["privacy"] = ledger.to_json()
            state["rounds"].append(entry)
            state["completed_round"] = server_round
            save_checkpoint(run.path, global_arrays, state)
            say(
                f"round {server_round}: {len(ok)} bank(s), loss {entry['train_loss']:.4f}"
                + (f", {len(dropped)} dropped" if dropped else "")
                + (", SecAgg+" if cfg.secagg.enabled else "")
                + (f", epsilon {max(entry['epsilon'].values()):.2f}" if dp.enabled else "")
            )
        adapters.save_adapter(model, global_arrays, run.path)
        adapters.load_tokenizer(base).save_pretrained(str(run.path))
        atomic_write_json(run.path / keys.ADAPTER_BASE_FILE, lineage_record(base, []))
        (run.path / CHECKPOINT_FILE).unlink()
        run.metrics.update(summary_metrics(cfg, state, adapters.bytes_of(global_arrays)))
        run.metrics[keys.ADAPTER_BASE] = lineage_record(base, [])
        if audit is not None:
            atomic_write_text(run.path / OPENED_FILES, "".join(p + "\n" for p in sorted(audit.paths)))
    return cfg.output_dir


def round_record(
    server_round: int, cfg: FedLoraConfig, outcome: RoundOutcome, residual: float | None
) -> dict[str, Any]:
    banks: list[dict[str, Any]] = []
    for b in outcome.banks:
        m = b.metrics
        banks.append(
            {
                "bank": b.bank,
                "node_id": b.node_id,
                # Under DP the weight is 1 and the row count stays with the bank (dp.py).
                "samples": None if cfg.differential_privacy.enabled else int(m[proto.KEY_NUM_EXAMPLES]),
                "train_loss": m["train-loss"],
                "loss_first": m["loss-first"],
                "loss_last": m["loss-last"],
                "steps": int(m["steps"]),
                "tokens": int(m["tokens"]),
                "train_s": m["train-s"],
                "gpu_s": m.get("gpu-s", 0.0),
                "bytes_sent": b.bytes_sent,  # SecAgg+: every protocol message, the masked vector included
                "data_sha256": b.data_sha256,
                **({"update_norm": m["update-norm"]} if "update-norm" in m else {}),
            }
        )
    entry = {
        "round": server_round,
        "selected_nodes": outcome.selected,
        "banks": banks,
        "dropped": outcome.dropped,
        "train_loss": float(np.mean([b["train_loss"] for b in banks])),
        "bytes_to_banks": outcome.bytes_down * len(outcome.selected),
        "bytes_from_banks": sum(b["bytes_sent"] for b in banks),
        "wall_s": round(outcome.wall_s, 3),
        "svd_residual_max": residual,
    }
    if outcome.plain_arrays_seen is not None:
        entry["secagg"] = {"plain_arrays_seen": outcome.plain_arrays_seen}
    return entry


def summary_metrics(cfg: FedLoraConfig, state: dict[str, Any], adapter_bytes: int) -> dict[str, Any]:
    rounds = state["rounds"]
    first, last = rounds[0], rounds[-1]
    train_s = sum(b["train_s"] for r in rounds for b in r["banks"])
    tokens = sum(b["tokens"] for r in rounds for b in r["banks"])
    return {
        keys.METHOD: cfg.method,
        "federated": True,
        "aggregation": cfg.aggregation.method,
        "secure_aggregation": cfg.secagg.enabled,
        "engine": cfg.engine.kind,
        "rounds_completed": state["completed_round"],
        "resumed_after_round": state.get("resumed_after_round", []),
        keys.STEPS: sum(max((b["steps"] for b in r["banks"]), default=0) for r in rounds),
        keys.LOSS_FIRST: float(np.mean([b["loss_first"] for b in first["banks"]])),
        keys.LOSS_LAST: last["train_loss"],
        keys.TOKENS_TOTAL: tokens,
        keys.TRAIN_RUNTIME_S: round(sum(r["wall_s"] for r in rounds), 3),
        keys.TOKENS_PER_S: round(tokens / train_s, 1) if train_s else None,
        # The banks' GPU time (each bank's own round on its own GPU), not the server's: it trains nothing.
        keys.GPU_HOURS: round(sum(b.get("gpu_s", 0.0) for r in rounds for b in r["banks"]) / 3600, 4),
        keys.WORLD_SIZE: len(cfg.banks),
        "adapter_bytes": adapter_bytes,
        "bytes_sent_total": sum(r["bytes_to_banks"] + r["bytes_from_banks"] for r in rounds),
        "epsilon_final": rounds[-1].get("epsilon"),
        "delta": cfg.differential_privacy.delta if cfg.differential_privacy.enabled else None,
        "rounds": rounds,
    }


def make_server_app(cfg: FedLoraConfig | None = None, *, quiet: bool = False, result: list[Path] | None = None) -> Any:
    """The ServerApp. With `cfg` (simulation) it runs that config; without (deployment) it reads the
    config `flwr run` passed in the run config (`kofin-config`)."""
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    from kofin.offline import apply_offline_env

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        apply_offline_env()
        run_cfg = cfg
        if run_cfg is None:
            run_cfg = FedLoraConfig.model_validate(json.loads(str(context.run_config[RUN_CONFIG_KEY])))
        out = serve_rounds(grid, run_cfg, quiet=quiet)
        if result is not None:
            result.append(out)

    return app


RUN_CONFIG_KEY = "kofin-config"
