"""Answer backends that generate text: a local transformers model, or an OpenAI-compatible server.

Run as: a library; `kofin ask --backend transformers|openai` streams through these. (The default
`extractive` backend needs no model and lives in serve/answer.py.)

Both stream: `stream(messages)` yields text pieces as they are generated, so the chat can show
them at once. The OpenAI client speaks plain HTTP + server-sent events with the standard
library (vLLM, TGI and llama.cpp servers accept it) and, being air-gapped by design, connects
only to the hosts listed in `allowed_hosts` (loopback by default).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kofin.config import KofinModel, ResolvedPath
from kofin.errors import KofinError
from kofin.offline import check_endpoint_host


class BackendError(KofinError):
    """A generative backend that cannot answer; the message says which and why."""


class GenerationConfig(KofinModel):
    backend: Literal["extractive", "transformers", "openai"] = Field(
        "extractive",
        description="extractive: quoted cited sentences, no LLM; transformers: a local model folder; "
        "openai: an OpenAI-compatible endpoint (vLLM).",
    )
    model_path: ResolvedPath | None = Field(
        None, description="Local model folder for the transformers backend (e.g. the merge stage's output)."
    )
    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible endpoint for the openai backend.")
    model: str = Field("kofin", description="Model name sent to the OpenAI-compatible endpoint.")
    api_key_env: str = Field(
        "KOFIN_OPENAI_API_KEY",
        description="Environment variable holding the endpoint's API key (none needed for a local vLLM).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="Hosts the openai backend may connect to; add the bank's internal vLLM host here.",
    )
    max_new_tokens: int = Field(512, ge=1, description="Longest generated answer, in tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy (reproducible answers).")
    timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for the endpoint.")

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        if self.backend == "transformers" and self.model_path is None:
            raise ValueError(
                "backend 'transformers' needs model_path: a local model folder (e.g. runs/merge-demo/model)"
            )
        if self.backend == "openai":
            check_endpoint_host(self.base_url, self.allowed_hosts, "base_url")
        return self


def make_backend(cfg: GenerationConfig):
    if cfg.backend == "transformers":
        return TransformersBackend(cfg)
    if cfg.backend == "openai":
        return OpenAIBackend(cfg)
    return None


class TransformersBackend:
    def __init__(self, cfg: GenerationConfig):
        import torch  # noqa: F401  (fail here, with the model path in the message, if missing)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if cfg.model_path is None:  # GenerationConfig requires it; also holds for a model_construct() config
            raise BackendError("backend 'transformers' needs model_path: a local model folder (kofin never downloads)")
        path = Path(cfg.model_path)
        if not path.is_dir():
            raise BackendError(f"model_path {path}: no such folder; point it at a local model (kofin never downloads)")
        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self.model.eval()

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            assert isinstance(prompt, str), "apply_chat_template(tokenize=False) returns the prompt text"
            return prompt
        return "\n\n".join(m["content"] for m in messages) + "\n\n답변:"

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        inputs = self.tokenizer(self._prompt(messages), return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=self.cfg.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if self.cfg.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.cfg.temperature)
        else:
            kwargs.update(do_sample=False)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self.model.generate(**kwargs)
            except BaseException as err:  # re-raised in the caller's thread below
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if errors:
            raise BackendError(f"generation with {self.cfg.model_path} failed: {errors[0]}") from errors[0]


class OpenAIBackend:
    def __init__(self, cfg: GenerationConfig):
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        body = {
            "model": self.cfg.model,
            "messages": messages,
            "stream": True,
            "max_tokens": self.cfg.max_new_tokens,
            "temperature": self.cfg.temperature,
        }
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            response = urllib.request.urlopen(request, timeout=self.cfg.timeout_s)  # noqa: S310 (host checked in config)
        except urllib.error.HTTPError as err:
            raise BackendError(
                f"{self.url}: HTTP {err.code} {err.reason}: {err.read()[:300].decode(errors='replace')}"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise BackendError(
                f"{self.url}: cannot connect ({getattr(err, 'reason', err)}); is the vLLM server running?"
            ) from None
        with response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                except (json.JSONDecodeError, KeyError, IndexError):
                    raise BackendError(f"{self.url}: unexpected stream line {data[:200]!r}") from None
                if delta:
                    yield delta
