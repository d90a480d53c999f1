"""What `kofin sft` shows at the terminal: phases, one line per step, known-harmless warnings hidden by
name (only those), axolotl's full output kept in the run's logs/train.log; --help lists allowed values."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from kofin.training.console import HARMLESS, AxolotlConsole

ROOT = Path(__file__).resolve().parents[1]

# Lines as axolotl 0.19 prints them on a CPU host (abridged paths), fed in odd-sized chunks.
AXOLOTL_OUTPUT = (
    "\n".join(
        [
            "[2026-12-03 05:56:10,009] [WARNING] [torchao] Failed to load /e/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load",
            "[2026-12-03 05:56:11,475] [WARNING] [bitsandbytes.backends.cpu.ops] Failed to load CPU gemm_4bit_forward from "
            "kernels-community: Version 1 of 'kernels-community/quantization-bitsandbytes' is not available",
            "[2026-12-03 05:56:12,670] [INFO] [axolotl.cli.config] config:",
            "{",
            '  "adapter": "lora",',
            '  "datasets": [',
            "    {",
            '      "path": "/d/train.jsonl"',
            "    }",
            "  ],",
            '  "lora_r": 8',
            "}",
            "[2026-12-03 05:56:13,004] [WARNING] [axolotl.utils.data.sft] Processing datasets during training can lead to VRAM instability.",
            "[2026-12-03 05:56:13,046] [INFO] [axolotl.prompt_strategies.chat_template] Using chat template:",
            "---",
            "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            "---",
            "Tokenizing Prompts (num_proc=2):   0%|          | 0/53 [00:00<?, ? examples/s]\r"
            "Tokenizing Prompts (num_proc=2): 100%|██████████| 53/53 [00:00<00:00, 114.85 examples/s]",
            "[2026-12-03 05:56:15,000] [WARNING] [axolotl.loaders.model] a warning nobody has vetted",
            "Loading weights:   0%|          | 0/39 [00:00<?, ?it/s]\rLoading weights: 100%|██████████| 39/39 [00:00<00:00, 3917.56it/s]",
            " 33%|███▎      | 1/3 [00:07<00:15,  7.60s/it]\r                                             \r"
            "{'loss': '8.953', 'grad_norm': '0.9775', 'tokens/total': 2392, 'epoch': '0.07143'}",
            " 67%|██████▋   | 2/3 [00:10<00:04,  4.71s/it]\r"
            "{'loss': '8.963', 'tokens/train_per_sec_per_gpu': '94.94', 'tokens/total': 4184, 'epoch': '0.1429'}",
            "{'train_runtime': '13.51', 'train_loss': '8.934'}",
        ]
    )
    + "\n"
)


def shown(text: str) -> str:
    out = io.StringIO()
    view = AxolotlConsole(out)
    data = text.encode()
    for i in range(0, len(data), 37):  # chunk borders fall inside lines and inside UTF-8 bars
        view.feed(data[i : i + 37])
    view.close()
    return out.getvalue()


def test_console_shows_phases_and_steps_and_hides_only_named_warnings():
    out = shown(AXOLOTL_OUTPUT)
    lines = out.splitlines()
    assert lines[0] == "kofin sft: axolotl accepted the config (its full resolved config is in logs/train.log)"
    assert '"lora_r"' not in out and '"adapter"' not in out and "{% for m" not in out  # dumps stay in the log
    assert "kofin sft: tokenising 53 rows with the chat template" in lines
    assert "kofin sft: loading the base model" in lines
    assert "  step 1/3  loss 8.9530  elapsed 00:07  ETA 00:15" in lines
    assert "  step 2/3  loss 8.9630  95 tokens/s per GPU  elapsed 00:10  ETA 00:04" in lines
    assert "kofin sft: training done in 13.5 s, mean loss 8.9340" in lines
    # an unknown warning is shown; the known ones are counted by name at the end
    assert "[2026-12-03 05:56:15,000] [WARNING] [axolotl.loaders.model] a warning nobody has vetted" in lines
    assert "torchao" not in out.replace("torchao-optional-kernels", "")
    assert lines[-1] == (
        "kofin sft: hid known-harmless warnings (torchao-optional-kernels x1, bitsandbytes-kernel-hub x1, "
        "axolotl-preprocess-advice x1); they are in logs/train.log"
    )
    assert "%|" not in out  # no redrawn bars


def test_every_hidden_warning_has_a_reason():
    assert all(len(why) > 20 for _, why in HARMLESS.values())


def test_help_lists_the_allowed_values_from_the_literals():
    out = subprocess.run([sys.executable, "-m", "kofin.cli", "sft", "--help"], capture_output=True, text=True).stdout
    block = out.split("  launch.launcher", 1)[1].split("\n  launch.", 1)[0]
    assert "one of: accelerate | torchrun | python" in block
    assert (
        "one of: ddp | deepspeed_zero1 | deepspeed_zero2 | deepspeed_zero3 | fsdp"
        in out.split("  launch.distributed", 1)[1]
    )
    assert "one of: cosine | linear | constant | constant_with_warmup" in out.split("  training.lr_scheduler", 1)[1]
    assert "one of: eeve | jinja | tokenizer_default" in out
    dpo = subprocess.run([sys.executable, "-m", "kofin.cli", "dpo", "--help"], capture_output=True, text=True).stdout
    assert "one of: auto | unsloth | trl" in dpo and "one of: stack | merge" in dpo


@pytest.mark.slow
def test_a_real_run_at_the_terminal(tmp_path, tiny_data_run, axolotl_env):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kofin.cli",
            "sft",
            "--config",
            str(ROOT / "configs" / "sft" / "tiny.yaml"),
            f"output_dir={tmp_path / 'sft'}",
            f"datasets.0.path={tiny_data_run}",
            "training.max_steps=2",
            "training.save_steps=2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    phases = [
        "checking 1 dataset(s)",
        "validating the axolotl YAML",
        "launching 1 rank through python",
        "axolotl accepted the config",
        "tokenising",
        "step 1/2  loss",
        "step 2/2  loss",
        "training done",
    ]
    at = [out.find(p) for p in phases]
    assert all(i >= 0 for i in at) and at == sorted(at), out
    assert "_C_mxfp8" not in out and '"lora_r": 8' not in out
    log = (tmp_path / "sft" / "logs" / "train.log").read_text()
    assert '"lora_r": 8' in log and "Tokenizing Prompts" in log  # the full output is kept
