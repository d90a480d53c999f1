"""What a person at the terminal sees of an `axolotl train` run; every byte still goes to logs/train.log.

Run as: a library; `kofin sft` (without --quiet) feeds axolotl's output through `AxolotlConsole`.

axolotl prints its whole resolved config (~190 lines), progress bars that redraw with carriage
returns, and library warnings that read like errors but are expected on a kofin host. The console
shows phases as they happen (config accepted, tokenising N rows, loading the model, one line per
logged step with loss, tokens/s and ETA), passes every other line through, and hides only the
warnings named in HARMLESS, each for a stated reason, counting them at the end.
"""

from __future__ import annotations

import ast
import re
import sys
from typing import IO

# name -> (pattern, why it is harmless on a kofin host). Only these are hidden, nothing else.
HARMLESS: dict[str, tuple[re.Pattern[str], str]] = {
    "torchao-optional-kernels": (
        re.compile(r"\[torchao\] Failed to load .*torchao/_C_"),
        "torchao's optional mxfp8/cutlass CUDA kernels; the recipe uses neither",
    ),
    "torch-enum-register-constant": (
        re.compile(r"is an Enum subclass and is now natively supported by torch\.compile"),
        "a torch deprecation notice raised inside torchao's import",
    ),
    "bitsandbytes-kernel-hub": (
        re.compile(r"kernels-community/quantization-bitsandbytes|gemm_4bit_forward_kernel = get_kernel"),
        "bitsandbytes looks for an optional kernel on the Hub; kofin runs offline on purpose "
        "and bitsandbytes falls back to its built-in one",
    ),
    "axolotl-preprocess-advice": (
        re.compile(r"Processing datasets during training can lead to VRAM instability"),
        "kofin tokenises inside the run (prepared/), once per config",
    ),
    "pin-memory-without-accelerator": (
        re.compile(r"'pin_memory' argument is set as true but no accelerator|super\(\)\.__init__\(loader\)"),
        "CPU runs only: pinned memory has no device to copy to",
    ),
}
CONFIG_DUMP_START = re.compile(r"\[axolotl\.cli\.config\] config:\s*$")
TOKENISING = re.compile(r"Tokenizing Prompts.*?\|\s*\d+/(\d+)")
LOADING = re.compile(r"^Loading weights")
STEP_BAR = re.compile(r"^\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \[([\d:]+)<([\d:?]+)")
PROGRESS = re.compile(r"(\d+%\|.*\||\s\d+/\d+ \[[\d:]+<|examples/s\])")  # redrawn progress bars: the log keeps them
# axolotl's INFO lines narrate what the phases above already say; they stay in the log.
INFO = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[(INFO|DEBUG)\]")
TEMPLATE_START = re.compile(r"Using chat template:\s*$")


class AxolotlConsole:
    def __init__(self, out: IO[str] | None = None, *, log_name: str = "logs/train.log"):
        self.out = out or sys.stdout
        self.log_name = log_name
        self.pending = ""
        self.in_dump = False
        self.template_fences = 0  # inside the "---" fenced chat template axolotl prints: 1 or 2 seen
        self.hidden: dict[str, int] = {}
        self.said: set[str] = set()
        self.bar: tuple[str, str, str, str] | None = None  # step, total, elapsed, remaining

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _once(self, key: str, text: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self._say(text)

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk.decode("utf-8", "replace")
        *lines, self.pending = re.split(r"[\r\n]", self.pending)
        for line in lines:
            self.line(line)

    def line(self, line: str) -> None:
        if self.in_dump:
            self.in_dump = line != "}"
            return
        if self.template_fences:
            self.template_fences += line == "---"
            if self.template_fences > 2:
                self.template_fences = 0
            return
        if TEMPLATE_START.search(line):
            self.template_fences = 1
            return
        if CONFIG_DUMP_START.search(line):
            self.in_dump = True
            self._say(f"kofin sft: axolotl accepted the config (its full resolved config is in {self.log_name})")
            return
        for name, (pattern, _) in HARMLESS.items():
            if pattern.search(line):
                self.hidden[name] = self.hidden.get(name, 0) + 1
                return
        if m := TOKENISING.search(line):
            self._once("tokenising", f"kofin sft: tokenising {int(m.group(1)):,} rows with the chat template")
            return
        if LOADING.search(line):
            self._once("loading", "kofin sft: loading the base model")
            return
        if m := STEP_BAR.search(line):
            step, total, elapsed, remaining = m.groups()  # the pattern's four groups always take part
            self.bar = (step, total, elapsed, remaining)
            return
        if line.startswith("{'loss'") or line.startswith("{'train_runtime'"):
            self._step_record(line)
            return
        if not line.strip() or PROGRESS.search(line) or INFO.search(line):
            return
        self._say(line)

    def _step_record(self, line: str) -> None:
        try:
            record = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError):
            self._say(line)
            return
        if "train_runtime" in record:
            self._say(
                f"kofin sft: training done in {float(record['train_runtime']):.1f} s, "
                f"mean loss {float(record.get('train_loss', 'nan')):.4f}"
            )
            return
        step, total, elapsed, eta = self.bar or ("?", "?", "?", "?")
        speed = record.get("tokens/train_per_sec_per_gpu")
        parts = [f"step {step}/{total}", f"loss {float(record['loss']):.4f}"]
        if speed is not None:
            parts.append(f"{float(speed):,.0f} tokens/s per GPU")
        parts += [f"elapsed {elapsed}", f"ETA {eta}"]
        self._say("  " + "  ".join(parts))

    def close(self) -> None:
        if self.pending:
            self.line(self.pending)
            self.pending = ""
        if self.hidden:
            names = ", ".join(f"{name} x{n}" for name, n in self.hidden.items())
            self._say(f"kofin sft: hid known-harmless warnings ({names}); they are in {self.log_name}")
