"""A bank's side of a round: load the global adapter, train it on local chats, send the adapter back.

Run as: the ClientApp of `kofin fedlora` (simulation: built by run.py for the virtual SuperNodes;
deployment: `kofin.training.fedlora.app:client_app`, run by each bank's `flower-supernode`).

The bank's data path reaches only this process: in deployment through its SuperNode's
`--node-config data=...`, in simulation through the ClientApp built for the virtual SuperNodes.
The reply carries the adapter tensors, the row count used as FedAvg weight, losses and timings,
and the sha256 of the rows trained on (so a run records which data each bank used without the
server ever seeing it).

Training runs in-process with torch + PEFT (the same LoRA/DoRA/rsLoRA/QLoRA settings `kofin sft`
gives axolotl): a round is a few local steps, and launching axolotl per bank per round would
spend minutes on start-up for seconds of training.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kofin.errors import KofinError
from kofin.training.fedlora import adapter as adapters
from kofin.training.fedlora.config import FedLoraConfig

# Record and key names of the messages between server and banks (both sides import these).
ADAPTER_RECORD = "adapter"
CONFIG_RECORD = "config"
METRICS_RECORD = "metrics"
BANK_RECORD = "bank"
KEY_ROUND = "server-round"
KEY_CONFIG_JSON = "fedlora-config"
KEY_NUM_EXAMPLES = "num-examples"
DATA_FILE = "sft/train.jsonl"


class BankDataError(KofinError):
    """A bank's local data that cannot be trained on."""


@dataclass(frozen=True)
class BankData:
    """Where this bank's chats are and which of them it trains on (the bank's own settings)."""

    name: str
    path: Path
    shard: tuple[int, int] | None = None
    max_rows: int | None = None

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any]) -> BankData:
        """A deployed bank's SuperNode: --node-config 'bank="bank_a" data="/srv/chats.jsonl" [shard="0/3"]'."""
        missing = [k for k in ("bank", "data") if k not in node_config]
        if missing:
            raise BankDataError(
                f"this SuperNode's --node-config lacks {', '.join(missing)}; start it with "
                '--node-config \'bank="bank_a" data="/path/to/chats.jsonl"\''
            )
        shard = None
        if "shard" in node_config:
            k, _, n = str(node_config["shard"]).partition("/")
            shard = (int(k), int(n))
        max_rows = int(node_config["max-rows"]) if "max-rows" in node_config else None
        return cls(str(node_config["bank"]), Path(str(node_config["data"])), shard, max_rows)


def load_rows(bank: BankData) -> tuple[list[dict[str, Any]], str]:
    """The bank's chats (schema-checked; problems name file:line) and the sha256 of the rows used."""
    from kofin.data_ko.formats import read_records
    from kofin.data_ko.validate import check_sft_row

    path = bank.path / DATA_FILE if bank.path.is_dir() else bank.path
    if not path.is_file():
        what = f"no {DATA_FILE}" if bank.path.is_dir() else "missing"
        raise BankDataError(
            f"bank {bank.name}: data {bank.path} has no chats ({what}); build them with `kofin data build` "
            "or fix the bank's data path"
        )
    rows, problems = [], []
    for i, (where, row) in enumerate(read_records(path)):
        if bank.shard is not None and i % bank.shard[1] != bank.shard[0]:
            continue
        found = check_sft_row(row)
        problems += [f"{where}  {p}" for p in found]
        if not found:
            rows.append(row)
        if bank.max_rows is not None and len(rows) >= bank.max_rows:
            break
    if problems:
        raise BankDataError(f"bank {bank.name}: the local data cannot be used:\n  " + "\n  ".join(problems[:20]))
    if not rows:
        raise BankDataError(f"bank {bank.name}: no rows in {path} for shard {bank.shard}")
    digest = hashlib.sha256(
        "\n".join(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows).encode()
    ).hexdigest()
    return rows, digest


def encode(rows: list[dict[str, Any]], tokenizer: Any, sequence_len: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per chat; labels are -100 outside assistant turns, as `kofin sft` trains."""
    out = []
    for row in rows:
        enc = tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = list(enc["input_ids"])[:sequence_len]
        mask = list(enc["assistant_masks"])[:sequence_len]
        labels = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
        if any(x != -100 for x in labels):
            out.append((ids, labels))
    return out


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """The multiplier of `learning_rate` at a step of the whole federated run (rounds x local steps)."""
    if warmup and step < warmup and schedule != "constant":
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 1.0


def local_steps(cfg: FedLoraConfig, n_rows: int) -> int:
    t = cfg.training
    if t.local_steps is not None:
        return t.local_steps
    return max(1, math.ceil(t.num_epochs * n_rows / (t.micro_batch_size * t.gradient_accumulation_steps)))


def train_round(
    cfg: FedLoraConfig, bank: BankData, global_arrays: dict[str, np.ndarray], server_round: int
) -> tuple[dict[str, np.ndarray], dict[str, float], str]:
    """Train the global adapter on this bank's rows for one round: (adapter, metrics, data sha256)."""
    import torch

    started = time.time()
    rows, digest = load_rows(bank)
    base = adapters.resolve_base_model(cfg)
    tokenizer = adapters.load_tokenizer(base)
    examples = encode(rows, tokenizer, cfg.training.sequence_len)
    if not examples:
        raise BankDataError(
            f"bank {bank.name}: no chat has an assistant turn within {cfg.training.sequence_len} tokens"
        )
    model = adapters.build_peft_model(cfg, base, for_training=True)
    adapters.load_adapter_arrays(model, global_arrays)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    t = cfg.training
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    steps = local_steps(cfg, len(examples))
    total = steps * cfg.rounds.num_rounds
    warmup = int(t.warmup_ratio * total)
    # Order depends on the seed, the round and the bank, so a resumed run repeats what the killed one did.
    seed = int(hashlib.sha256(f"{t.seed}/{server_round}/{bank.name}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses, tokens = [], 0
    pad = tokenizer.pad_token_id
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = t.learning_rate * lr_factor(t.lr_scheduler, (server_round - 1) * steps + step, total, warmup)
        step_loss = 0.0
        for _ in range(t.gradient_accumulation_steps):
            batch = []
            for _ in range(t.micro_batch_size):
                if not order:
                    order = list(rng.permutation(len(examples)))
                batch.append(examples[order.pop()])
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=device)
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=device)
            attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=device)
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            (loss / t.gradient_accumulation_steps).backward()
            step_loss += float(loss.detach()) / t.gradient_accumulation_steps
            tokens += int(attention.sum())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
    trained = adapters.adapter_arrays(model)
    metrics = {
        KEY_NUM_EXAMPLES: float(len(examples)),
        "train-loss": float(np.mean(losses)),
        "loss-first": losses[0],
        "loss-last": losses[-1],
        "steps": float(steps),
        "tokens": float(tokens),
        "train-s": round(time.time() - started, 3),
        "gpu-s": round(time.time() - started, 3) if device == "cuda" else 0.0,  # the study's GPU-hours
    }
    dp = cfg.differential_privacy
    if dp.enabled:
        from kofin.training.fedlora.dp import privatize_update

        trained, norms = privatize_update(
            trained, global_arrays, clip_norm=dp.clip_norm, noise_multiplier=dp.noise_multiplier, seed=seed
        )
        metrics.update({"update-norm": norms["update_norm"], "clipped-norm": norms["clipped_norm"]})
        metrics[KEY_NUM_EXAMPLES] = 1.0  # equal weights under DP, and no row count in the clear (dp.py)
    return trained, metrics, digest


def config_for_banks(cfg: FedLoraConfig) -> str:
    """What a bank needs to train a round, as JSON for the ConfigRecord: never the banks' own data settings."""
    data = cfg.model_dump(
        mode="json", include={"base_model", "method", "lora", "training", "rounds", "differential_privacy", "secagg"}
    )
    data.update(output_dir=str(cfg.output_dir), banks=[{"name": b.name} for b in cfg.banks])
    data["engine"] = {"kind": "deployment"}  # a bank's copy of the config holds no data paths
    return json.dumps(data, ensure_ascii=False)


def replying_bank(reply: Any, sent_to: dict[str, int]) -> int:
    """The node a reply speaks for, matched by the message it answers (`sent_to`: message id -> node).
    When a bank's SuperNode is gone the SuperLink itself answers for it ("Node Unavailable"), so the
    sender id would be the SuperLink's; it is the fallback only."""
    return sent_to.get(reply.metadata.reply_to_message_id, int(reply.metadata.src_node_id))


def make_client_app(banks: dict[int, BankData] | None = None) -> Any:
    """The ClientApp. `banks` maps a virtual SuperNode's partition id to its bank (simulation); without it
    the bank comes from the SuperNode's --node-config (deployment)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from kofin.offline import apply_offline_env
    from kofin.training.fedlora import secagg

    app = ClientApp()

    @app.train(mods=[secagg.secagg_when_asked])
    def train(msg: Message, context: Context) -> Message:
        apply_offline_env()
        node_config = dict(context.node_config)
        if banks is not None:
            bank = banks[int(node_config["partition-id"])]
        else:
            bank = BankData.from_node_config(node_config)
        if secagg.is_secure_fit(msg.content):  # a SecAgg+ round: the mod masks what this returns
            cfg, global_arrays, server_round = secagg.read_secure_fit(msg.content)
            arrays, metrics, digest = train_round(cfg, bank, global_arrays, server_round)
            reply = secagg.secure_fit_reply(cfg, bank.name, arrays, metrics, digest, list(global_arrays))
            return Message(content=reply, reply_to=msg)
        config = msg.content.config_records[CONFIG_RECORD]
        cfg = FedLoraConfig.model_validate(json.loads(str(config[KEY_CONFIG_JSON])))
        global_arrays = {k: v.numpy() for k, v in msg.content.array_records[ADAPTER_RECORD].items()}
        arrays, metrics, digest = train_round(cfg, bank, global_arrays, int(str(config[KEY_ROUND])))
        content = RecordDict(
            {
                ADAPTER_RECORD: ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()}),
                METRICS_RECORD: MetricRecord(metrics),  # type: ignore[arg-type]
                BANK_RECORD: ConfigRecord({"name": bank.name, "data-sha256": digest}),
            }
        )
        return Message(content=content, reply_to=msg)

    return app
