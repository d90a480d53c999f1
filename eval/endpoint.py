"""The OpenAI-compatible backend (vLLM's `/v1/completions`): generation and log-likelihood over HTTP.

Run as: a library; `kofin eval` uses it for a model given as `endpoint:` instead of `path:`.

Log-likelihood is read as lm-evaluation-harness's `local-completions` model reads it: the
context and continuation are sent together with `echo: true, logprobs: 1, max_tokens: 1`, and
the continuation's tokens are those whose `text_offset` lies at or after the context's end (the
one generated token is dropped). Only the standard library is used: no client to install.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from kofin.eval.engine import BackendError, LogLikelihood, cut_at_stop


class EndpointBackend:
    tokenizer = None  # prompts that need a chat template fall back to plain text

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        batch_size: int = 8,
        api_key_env: str = "KOFIN_OPENAI_API_KEY",
        timeout_s: float = 300.0,
    ):
        self.url = base_url.rstrip("/") + "/completions"
        self.model, self.batch_size, self.timeout_s = model, batch_size, timeout_s
        self.api_key = os.environ.get(api_key_env)
        self.name = model

    def _complete(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url, data=json.dumps({"model": self.model, **body}).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (host checked in config)
                choices = json.loads(response.read())["choices"]
        except urllib.error.HTTPError as err:
            raise BackendError(
                f"{self.url}: HTTP {err.code} {err.reason}: {err.read()[:300].decode(errors='replace')}"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            raise BackendError(
                f"{self.url}: cannot connect ({getattr(err, 'reason', err)}); is the vLLM server running?"
            ) from None
        except (KeyError, json.JSONDecodeError) as err:
            raise BackendError(f"{self.url}: not an OpenAI completions response ({err})") from None
        return sorted(choices, key=lambda c: c.get("index", 0))

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        stop: Sequence[str] = ("\n",),
        progress: Callable | None = None,
    ) -> list[str]:
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start : start + self.batch_size])
            # Stop strings are applied here, as the transformers backend does, so both cut the same way.
            choices = self._complete({"prompt": batch, "max_tokens": max_new_tokens, "temperature": 0.0})
            out += [cut_at_stop(c["text"], stop) for c in choices]
            if progress:
                progress(len(batch))
        return out

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], progress: Callable | None = None
    ) -> list[LogLikelihood]:
        out: list[LogLikelihood] = []
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start : start + self.batch_size])
            choices = self._complete(
                {"prompt": [c + x for c, x in batch], "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
            )
            for (context, _), choice in zip(batch, choices, strict=True):
                lp = choice["logprobs"]
                # Whitespace ending the context belongs to the continuation, as in the transformers backend.
                picked = [i for i, off in enumerate(lp["text_offset"][:-1]) if off >= len(context.rstrip())]
                if not picked:
                    raise BackendError(f"{self.url}: no continuation tokens after context ...{context[-40:]!r}")
                greedy = all(
                    max(lp["top_logprobs"][i], key=lp["top_logprobs"][i].get) == lp["tokens"][i] for i in picked
                )
                out.append(LogLikelihood(sum(lp["token_logprobs"][i] for i in picked), len(picked), greedy))
            if progress:
                progress(len(batch))
        return out
