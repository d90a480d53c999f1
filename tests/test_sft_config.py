"""SFT config -> axolotl YAML and launch command, and every check that must fail before a launch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kofin.config import ConfigError, load_config
from kofin.rundir import RunDirError
from kofin.training.axolotl_yaml import build_axolotl_config
from kofin.training.launch import LaunchError, plan_launch
from kofin.training.sft import SftInputError, main
from kofin.training.sft_config import Launch, Method, SftConfig

ROOT = Path(__file__).resolve().parents[1]
EEVE = ROOT / "configs" / "sft" / "eeve_qlora_r256_8xh100.yaml"


def sft_config(tmp_path: Path, *overrides: str, data: Path | None = None) -> SftConfig:
    data = data or tmp_path / "chat.jsonl"
    return load_config(SftConfig, None, [f"output_dir={tmp_path / 'sft'}", f"datasets=[{{path: {data}}}]", *overrides])


def axolotl_yaml(cfg: SftConfig, tmp_path: Path) -> dict:
    return build_axolotl_config(
        cfg, base_model=tmp_path / "base", datasets=[(tmp_path / "d.jsonl", "chat")], output_dir=tmp_path / "out"
    )


# ---------------------------------------------------------------- methods


@pytest.mark.parametrize(
    "method, adapter, extra",
    [
        ("lora", "lora", {}),
        ("qlora", "qlora", {"load_in_4bit": True}),
        ("dora", "lora", {"peft_use_dora": True}),
        ("rslora", "lora", {"peft_use_rslora": True}),
        ("qlora+rslora", "qlora", {"load_in_4bit": True, "peft_use_rslora": True}),
        ("QLoRA + DoRA", "qlora", {"load_in_4bit": True, "peft_use_dora": True}),
    ],
)
def test_method_maps_to_axolotl_keys(tmp_path, method, adapter, extra):
    y = axolotl_yaml(sft_config(tmp_path, f"method={method}"), tmp_path)
    assert y["adapter"] == adapter
    for key, value in extra.items():
        assert y[key] == value
    for key in {"load_in_4bit", "peft_use_dora", "peft_use_rslora"} - set(extra):
        assert key not in y


def test_chat_and_completion_datasets(tmp_path):
    cfg = sft_config(tmp_path)
    y = build_axolotl_config(
        cfg,
        base_model=tmp_path,
        datasets=[(tmp_path / "a.jsonl", "chat"), (tmp_path / "b.jsonl", "completion")],
        output_dir=tmp_path / "out",
    )
    chat, text = y["datasets"]
    assert chat["type"] == "chat_template" and chat["roles_to_train"] == ["assistant"]
    assert "chat_template" not in chat  # the dataset takes the config's top-level template
    from kofin.tiny import EEVE_CHAT_TEMPLATE

    # Written out, so a base tokenizer without a template still trains, and the run's tokenizer carries it.
    assert (y["chat_template"], y["chat_template_jinja"]) == ("jinja", EEVE_CHAT_TEMPLATE)
    assert text == {"path": str(tmp_path / "b.jsonl"), "ds_type": "json", "type": "completion", "field": "text"}


def test_reference_recipe_yaml(tmp_path):
    cfg = load_config(SftConfig, EEVE)
    y = axolotl_yaml(cfg, tmp_path)
    assert (y["adapter"], y["load_in_4bit"], y["lora_r"], y["lora_target_linear"]) == ("qlora", True, 256, True)
    # SDPA packs in the pinned env (varlen / block-diagonal mask); FlashAttention-2 is an opt-in.
    assert (y["bf16"], y["attn_implementation"], y["sample_packing"], y["gradient_checkpointing"]) == (
        True,
        "sdpa",
        True,
        True,
    )
    assert cfg.launch.world_size == 8 and y["auto_resume_from_checkpoints"] is True
    assert y["chat_template"] == "jinja" and "Assistant:" in y["chat_template_jinja"]
    assert y["lora_dropout"] == 0  # unsloth's fused LoRA kernels (DPO on this adapter) need it
    flash = axolotl_yaml(load_config(SftConfig, EEVE, ["training.flash_attention=true"]), tmp_path)
    assert flash["attn_implementation"] == "flash_attention_2"


def test_chat_template_choices(tmp_path):
    own = axolotl_yaml(sft_config(tmp_path, "chat_template=tokenizer_default"), tmp_path)
    assert own["chat_template"] == "tokenizer_default" and "chat_template_jinja" not in own
    text = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    mine = axolotl_yaml(
        sft_config(tmp_path, "chat_template=jinja", f"chat_template_jinja={json.dumps(text)}"), tmp_path
    )
    assert (mine["chat_template"], mine["chat_template_jinja"]) == ("jinja", text)
    with pytest.raises(ConfigError, match="chat_template: jinja needs chat_template_jinja"):
        sft_config(tmp_path, "chat_template=jinja")
    with pytest.raises(ConfigError, match="chat_template_jinja is unused with chat_template: eeve"):
        sft_config(tmp_path, f"chat_template_jinja={json.dumps(text)}")


def test_deepspeed_and_fsdp(tmp_path):
    y = build_axolotl_config(
        sft_config(tmp_path, "launch.distributed=deepspeed_zero3"),
        base_model=tmp_path,
        datasets=[],
        output_dir=tmp_path,
        deepspeed_json=tmp_path / "deepspeed.json",
    )
    assert y["deepspeed"] == str(tmp_path / "deepspeed.json")
    assert "gradient_checkpointing_kwargs" not in y  # nothing to recompute without checkpointing
    y = build_axolotl_config(
        sft_config(tmp_path, "launch.distributed=deepspeed_zero3", "training.gradient_checkpointing=true"),
        base_model=tmp_path,
        datasets=[],
        output_dir=tmp_path,
        deepspeed_json=tmp_path / "deepspeed.json",
    )
    # ZeRO-3 + LoRA with non-reentrant recompute can raise CheckpointError; axolotl would only warn
    # for a DeepSpeed file named *zero3*, and kofin's is deepspeed.json.
    assert y["gradient_checkpointing_kwargs"] == {"use_reentrant": True}
    y = build_axolotl_config(
        sft_config(tmp_path, "launch.distributed=deepspeed_zero2", "training.gradient_checkpointing=true"),
        base_model=tmp_path,
        datasets=[],
        output_dir=tmp_path,
        deepspeed_json=tmp_path / "deepspeed.json",
    )
    assert "gradient_checkpointing_kwargs" not in y
    y = axolotl_yaml(sft_config(tmp_path, "launch.distributed=fsdp", "training.gradient_checkpointing=true"), tmp_path)
    assert y["fsdp_version"] == 2 and y["fsdp_config"]["activation_checkpointing"] is True
    assert y["gradient_checkpointing"] is False


# ---------------------------------------------------------------- launch commands


def test_torchrun_multinode_rendezvous_in_a_container(tmp_path):
    launch = Launch(
        launcher="torchrun",
        gpus_per_node=8,
        nodes=2,
        node_rank=1,
        rdzv_endpoint="10.0.0.1:29500",
        axolotl_env=tmp_path,
        container=["docker", "run", "--gpus", "all", "img"],
    )
    argv = plan_launch(launch, tmp_path / "a.yaml", cuda=True, run_dir=tmp_path).argv
    assert argv[:6] == ["docker", "run", "--gpus", "all", "img", "env"]
    # docker does not forward the client's environment: the offline switches are set inside the image.
    inside = argv[6 : argv.index("torchrun")]
    assert "HF_HUB_OFFLINE=1" in inside and "AXOLOTL_DO_NOT_TRACK=1" in inside
    assert argv[argv.index("torchrun") :] == [
        "torchrun",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "8",
        "--node_rank",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        "10.0.0.1:29500",
        "--rdzv_id",
        "kofin-sft",
        "-m",
        "axolotl.cli.train",
        str(tmp_path / "a.yaml"),
    ]


def test_accelerate_multinode_flags(tmp_path, axolotl_env):
    launch = Launch(gpus_per_node=8, nodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29500")
    argv = plan_launch(launch, tmp_path / "a.yaml", cuda=True, run_dir=tmp_path).argv
    # Loose pairing of `--flag value` after `accelerate launch`; a trailing odd item has no value.
    flags = dict(zip(argv[2::2], argv[3::2], strict=False))
    assert flags["--num_processes"] == "16" and flags["--num_machines"] == "2"  # accelerate counts all nodes
    assert "--multi_gpu" in argv
    i = argv.index("--machine_rank")
    assert argv[i : i + 8] == [
        "--machine_rank",
        "1",
        "--main_process_ip",
        "10.0.0.1",
        "--main_process_port",
        "29500",
        "--rdzv_backend",
        "c10d",
    ]


def test_accelerate_and_cpu_ddp(tmp_path, axolotl_env):
    launch = Launch(launcher="accelerate", gpus_per_node=2)
    gpu = plan_launch(launch, tmp_path / "a.yaml", cuda=True, run_dir=tmp_path)
    assert gpu.argv[0] == str(axolotl_env / "bin" / "accelerate")
    assert ["--num_processes", "2"] == gpu.argv[2:4] and "--multi_gpu" in gpu.argv
    assert gpu.argv[-3:] == ["-m", "axolotl.cli.train", str(tmp_path / "a.yaml")]
    cpu = plan_launch(launch, tmp_path / "a.yaml", cuda=False, run_dir=tmp_path)
    assert cpu.argv[-3:] == [str(ROOT / "training" / "axolotl_entry.py"), "train", str(tmp_path / "a.yaml")]
    assert cpu.env["ACCELERATE_USE_CPU"] == "1"


def test_missing_axolotl_env_says_how_to_make_it(tmp_path):
    with pytest.raises(LaunchError, match="make axolotl-env"):
        plan_launch(Launch(axolotl_env=tmp_path / "nope"), tmp_path / "a.yaml", cuda=False, run_dir=tmp_path)


# ---------------------------------------------------------------- bad configs fail before any launch


def test_rank_zero_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"lora\.r: .*rank 0 trains nothing"):
        sft_config(tmp_path, "lora.r=0")


def test_unknown_method_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"method: .*unknown part 'qlora2'.*qlora\+rslora"):
        sft_config(tmp_path, "method=qlora2")
    with pytest.raises(ValueError, match="not both"):
        Method.parse("lora+qlora")


def test_launch_settings_that_cannot_work(tmp_path):
    with pytest.raises(ConfigError, match="nodes > 1 needs rdzv_endpoint"):
        sft_config(tmp_path, "launch.nodes=2")
    with pytest.raises(ConfigError, match="must be host:port"):
        sft_config(tmp_path, "launch.nodes=2", "launch.rdzv_endpoint=10.0.0.1")
    with pytest.raises(ConfigError, match="launcher 'python' starts one process"):
        sft_config(tmp_path, "launch.launcher=python", "launch.gpus_per_node=2")


def test_bad_config_file_line_and_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: out\ndatasets:\n  - path: x.jsonl\nmethod: lora\nlora:\n  r: 0\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "kofin.cli", "sft", "--config", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "bad.yaml:6" in proc.stderr and "lora.r" in proc.stderr
    assert not (tmp_path / "out.partial").exists()


def test_missing_dataset_fails_before_launch(tmp_path, tiny_model):
    cfg = sft_config(tmp_path, data=tmp_path / "missing.jsonl")
    with pytest.raises(SftInputError, match=r"datasets\.0\.path: .*missing\.jsonl does not exist"):
        main(cfg)
    assert not Path(str(cfg.output_dir) + ".partial").exists()


def test_rows_too_long_are_named_before_launch(tmp_path, tiny_model):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "예금자 보호 한도는?"},
                {"role": "assistant", "content": "5천만 원입니다."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "길게 설명해 주세요."},
                {"role": "assistant", "content": "대출 금리 " * 400},
            ]
        },
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    cfg = sft_config(tmp_path, "training.sequence_len=256", data=data)
    with pytest.raises(SftInputError) as err:
        main(cfg)
    message = str(err.value)
    assert "chat.jsonl:2" in message and "tokens > training.sequence_len 256" in message
    assert "chat.jsonl:1" not in message
    assert "training.too_long=drop" in message
    assert not Path(str(cfg.output_dir) + ".partial").exists()


def test_schema_errors_name_the_line(tmp_path, tiny_model):
    data = tmp_path / "chat.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "질문"}]}\n', encoding="utf-8")
    with pytest.raises(SftInputError, match=r"chat\.jsonl:1  messages: the last turn must be 'assistant'"):
        main(sft_config(tmp_path, data=data))


def test_incomplete_data_run_is_refused(tmp_path, tiny_model):
    (tmp_path / "data-run").mkdir()
    with pytest.raises(RunDirError, match=r"datasets\.0\.path .*not a complete run"):
        main(sft_config(tmp_path, data=tmp_path / "data-run"))


# ---------------------------------------------------------------- dry run of the reference recipe


def test_dry_run_of_the_reference_recipe(axolotl_env):
    """No weights anywhere: the shape comes from the config, axolotl validates the YAML."""
    proc = subprocess.run(
        [sys.executable, "-m", "kofin.cli", "sft", "--config", str(EEVE), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # Hand computation: r * (in + out) over EEVE's seven linears, 48 layers.
    per_layer = 256 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 14336) * 3)
    assert f"trainable params:  {48 * per_layer:,} of 10,804,924,416 (9.32%)" in out
    assert 48 * per_layer == 1_006_632_960
    # fp32 adapter weights and grads, two fp32 AdamW moments: 4 + 4 + 8 bytes per parameter.
    assert f"{'adapter weights (fp32)':<40}{1_006_632_960 * 4 / 2**30:8.2f} GiB\n" in out
    assert f"{'optimizer states (AdamW, fp32)':<40}{1_006_632_960 * 8 / 2**30:8.2f} GiB\n" in out
    # 8 DDP ranks: the all-reduce buckets are a second fp32 copy of the gradients.
    assert f"{'DDP gradient buckets (fp32)':<40}{1_006_632_960 * 4 / 2**30:8.2f} GiB\n" in out
    assert "activations: one recomputed layer" in out and "GiB  (estimate)" in out
    total = float(out.split("total per GPU")[1].split("GiB")[0])
    assert 25 <= total <= 32  # DESIGN.md: plan 25-32 GB per GPU with gradient checkpointing
    assert "torchrun --nnodes 1 --nproc_per_node 8 --standalone -m axolotl.cli.train" in out
    assert "# axolotl YAML (checked with axolotl's schema)" in out
    assert "adapter: qlora" in out and "lora_r: 256" in out and "attn_implementation: sdpa" in out
    assert "chat_template: jinja" in out and "chat_template_jinja:" in out
    # The recipe names paths that only exist on the cluster: said as warnings, the plan still prints.
    assert "warning: base_model /models/yanolja/EEVE-Korean-10.8B-v1.0 does not exist on this machine" in out
    assert "warning: datasets.0.path /data/kofin/runs/data-laws does not exist on this machine" in out
    assert "nothing was loaded or launched" in out


def test_flash_attention_opt_in_is_named_when_the_env_lacks_it(axolotl_env):
    proc = subprocess.run(
        [sys.executable, "-m", "kofin.cli", "sft", "--config", str(EEVE), "--dry-run", "training.flash_attention=true"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # The CPU lock has no flash-attn: said now, not after 8 GPUs are booked.
    assert (
        "note: this axolotl env lacks what the run needs: "
        "attn_implementation flash_attention_2 needs the flash_attn package" in proc.stdout
    )


def test_eeve_zero3_dry_run_passes_axolotls_validator(axolotl_env):
    """The reference recipe on ZeRO-3: explicit template, SDPA, reentrant checkpointing, accepted by axolotl."""
    from kofin.tiny import EEVE_CHAT_TEMPLATE
    from kofin.training import sft

    plan, missing = sft.dry_run(load_config(SftConfig, EEVE, ["launch.distributed=deepspeed_zero3"]))
    y = plan.axolotl
    assert (y["chat_template"], y["chat_template_jinja"]) == ("jinja", EEVE_CHAT_TEMPLATE)
    assert y["attn_implementation"] == "sdpa" and y["sample_packing"] is True
    assert y["gradient_checkpointing"] is True and y["gradient_checkpointing_kwargs"] == {"use_reentrant": True}
    assert missing == ["deepspeed needs the deepspeed package"]  # validated; only the GPU-host extra is absent
    assert "DDP gradient buckets (fp32)" not in plan.memory.parts  # ZeRO reduces through its own buckets


def test_every_distributed_variant_passes_axolotls_schema_and_typos_do_not(tmp_path, axolotl_env):
    """One axolotl process checks them all; axolotl alone would accept a misspelled key silently."""
    from kofin.training.launch import ENTRY

    variants = {
        "ddp": [],
        "zero1": ["launch.distributed=deepspeed_zero1"],
        "zero3": ["launch.distributed=deepspeed_zero3", "training.gradient_checkpointing=true"],
        "own_template": ["chat_template=tokenizer_default"],
        "packing_sdpa": ["training.sample_packing=true", "training.precision=bf16"],
        "fsdp": ["launch.distributed=fsdp", "training.gradient_checkpointing=true"],
        "qdora": ["method=qlora+dora", "lora.targets=[q_proj, v_proj]"],
        "truncate": ["training.too_long=truncate"],
        "packing": ["training.sample_packing=true", "training.flash_attention=true", "training.precision=bf16"],
    }
    paths = []
    for name, overrides in variants.items():
        cfg = sft_config(tmp_path, *overrides)
        y = build_axolotl_config(
            cfg,
            base_model=tmp_path,
            datasets=[(tmp_path / "d.jsonl", "chat"), (tmp_path / "t.jsonl", "completion")],
            output_dir=tmp_path / name,
            deepspeed_json=tmp_path / "ds.json",
        )
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(y), encoding="utf-8")
    typo = dict(y, lora_rr=256)
    paths.append(tmp_path / "typo.yaml")
    paths[-1].write_text(yaml.safe_dump(typo), encoding="utf-8")
    proc = subprocess.run(
        [str(axolotl_env / "bin" / "python"), str(ENTRY), "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    verdicts = {Path(v["path"]).stem: v for v in map(json.loads, proc.stdout.splitlines())}
    assert all(verdicts[name]["ok"] for name in variants), verdicts
    assert verdicts["typo"] == {"path": str(paths[-1]), "ok": False, "error": "keys axolotl does not know: lora_rr"}
    assert proc.returncode == 1


def test_metrics_tokens_per_s_gpu_hours_and_cost(tmp_path, monkeypatch):
    """collect_metrics on a written history: a resumed run, logged every 3 steps, checkpoint at 4."""
    from kofin.training import sft
    from kofin.training.memory import LlamaShape, estimate_memory

    history = [
        {"step": s, "loss": 2.0 - s / 10, "tokens/total": 100 * s, "memory/max_allocated (GiB)": 10 + s}
        for s in (3, 6, 9)
    ]
    ckpt = tmp_path / "checkpoint-9"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    cfg = sft_config(tmp_path, "launch.launcher=torchrun", "launch.gpus_per_node=4", "launch.gpu_hour_price=2.5")
    state = {
        "attempts": [
            {"wall_s": 1800.0, "killed": True},
            {"wall_s": 1800.0, "train_runtime_s": 50.0, "resumed_from_step": 4, "train_loss": 1.5},
        ]
    }
    shape = LlamaShape(hidden=64, intermediate=224, layers=2, heads=4, kv_heads=1, vocab=512)
    p = sft.SftPlan(
        tmp_path, [], shape, estimate_memory(shape, method="lora", r=8, seq_len=64, micro_batch=1), {}, None
    )
    monkeypatch.setattr(sft, "_cuda_available", lambda: True)
    m = sft.collect_metrics(tmp_path, cfg, p, state, {})
    # Tokens since the last log at or before step 4 (step 3: 300) over the finished attempt's runtime.
    assert (
        m["tokens_total"] == 900 and m["tokens_per_s"] == (900 - 300) / 50 and m["tokens_per_s_per_gpu"] == 600 / 50 / 4
    )
    assert m["gpu_hours"] == 4 * 3600 / 3600  # the killed attempt's hour counts too
    assert m["cost"] == {"amount": 10.0, "currency": "USD", "gpu_hour_price": 2.5}
    assert m["peak_gpu_memory_gib_rank0"] == 19 and m["steps"] == 9 and m["attempts"] == 2
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [3, 6, 9]
