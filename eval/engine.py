"""The transformers backend: batched log-likelihood of continuations and greedy batched generation.

Run as: a library (`TransformersBackend(path).loglikelihood([(context, continuation), ...])`);
`kofin eval` builds one per model it evaluates.

Log-likelihood follows lm-evaluation-harness so exported tasks give the same numbers there:
the context is encoded with the tokenizer's special tokens (BOS), the continuation is what
encoding `context + continuation` adds after the context's tokens, whitespace that ends the context
moves to the continuation, and requests run longest first so a batch wastes little padding.
Batches are right-padded: a causal model never attends to the padding after a token, so a
request scores the same alone or in a batch. Generation is greedy (deterministic),
left-padded, left-truncated (a long prompt keeps its end), and cut at the first stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kofin.errors import KofinError


class BackendError(KofinError):
    """A model that cannot be loaded or run."""


@dataclass
class LogLikelihood:
    logprob: float  # sum of the continuation tokens' log-probabilities
    tokens: int  # how many continuation tokens
    greedy: bool  # every continuation token was the model's argmax


class TransformersBackend:
    """A local causal LM: a folder with config.json and weights, or a kofin sft / dpo run holding a LoRA adapter."""

    def __init__(
        self,
        path: Path,
        *,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        cpu_threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if cpu_threads:
            # Small models on a shared CPU run ~10x faster on one thread than oversubscribed on all.
            torch.set_num_threads(cpu_threads)

        from kofin.eval.adapters import adapter_stack, is_adapter_run, load_with_adapters

        path = Path(path)
        adapters = is_adapter_run(path)
        if not adapters and not (path / "config.json").exists():
            raise BackendError(
                f"model {path}: no config.json; point the model at a folder with the model's "
                "config, weights and tokenizer (a kofin tiny/sft/dpo/merge run directory or a local download)"
            )
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        torch_dtype = {
            "auto": torch.bfloat16 if self.device.startswith("cuda") else torch.float32,
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }[dtype]
        if adapters:  # a kofin sft / dpo run: its base with the run's adapters merged in
            stack = adapter_stack(path)
            self.tokenizer = AutoTokenizer.from_pretrained(stack.tokenizer_dir)
            model = load_with_adapters(stack, torch_dtype)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.name = path.name

    # -------------------------------------------------------------- log-likelihood

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = self.tokenizer(context).input_ids
        whole = self.tokenizer(context + continuation).input_ids
        return ctx, whole[len(ctx) :]

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], progress: Callable | None = None
    ) -> list[LogLikelihood]:
        import torch

        encoded = []
        for context, continuation in requests:
            ctx, cont = self._encode_pair(context, continuation)
            if not cont:
                raise BackendError(
                    f"continuation {continuation!r} encodes to no tokens after context ...{context[-40:]!r}"
                )
            whole = (ctx + cont)[-(self.max_length + 1) :]  # keep the end: the continuation must fit
            encoded.append((whole[:-1], len(cont), whole[1:]))
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        results: list[LogLikelihood | None] = [None] * len(encoded)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            batch = [order[i] for i in range(start, min(start + self.batch_size, len(order)))]
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                inp = encoded[i][0]
                ids[row, : len(inp)] = torch.tensor(inp)
                mask[row, : len(inp)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(batch):
                inp, n_cont, targets = encoded[i]
                span = logprobs[row, len(inp) - n_cont : len(inp)]
                target = torch.tensor(targets[-n_cont:])
                results[i] = LogLikelihood(
                    logprob=float(span.gather(1, target[:, None]).sum()),
                    tokens=n_cont,
                    greedy=bool((span.argmax(-1) == target).all()),
                )
            if progress:
                progress(len(batch))
        return results  # type: ignore[return-value]

    # -------------------------------------------------------------- generation

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        stop: Sequence[str] = ("\n",),
        progress: Callable | None = None,
    ) -> list[str]:
        import torch

        tok = self.tokenizer
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            tok.padding_side = "left"  # new tokens follow every prompt directly
            tok.truncation_side = "left"  # a prompt too long keeps its end: the question and '답:' it answers
            enc = tok(
                [prompts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max(self.max_length - max_new_tokens, 1),
            )
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc.to(self.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tok.pad_token_id,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
            for row, i in enumerate(batch):
                text = tok.decode(gen[row, enc.input_ids.shape[1] :], skip_special_tokens=True)
                assert isinstance(text, str), "decode of one sequence is its text"
                out[i] = cut_at_stop(text, stop)
            if progress:
                progress(len(batch))
        tok.padding_side, tok.truncation_side = "right", "right"
        return out


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string; a stop at the very start is skipped (answers on the next line)."""
    stripped = text.lstrip()
    cut = len(stripped)
    for s in stop:
        pos = stripped.find(s)
        if pos > 0:
            cut = min(cut, pos)
    return stripped[:cut].strip()
