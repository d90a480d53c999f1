"""The OpenAI-compatible backend against a vLLM-style /v1/completions server on 127.0.0.1 running the tiny model.

The server computes real log-probabilities with the tiny model and answers in vLLM's completions
shape (echo, logprobs.tokens / token_logprobs / top_logprobs / text_offset), so the test checks
that kofin reads an endpoint's numbers exactly as it computes them locally.
"""

from __future__ import annotations

import pytest
from fake_openai import completions_server

from kofin.config import ConfigError, load_config
from kofin.eval.config import EvalConfig
from kofin.eval.endpoint import EndpointBackend
from kofin.eval.engine import TransformersBackend


@pytest.fixture(scope="module")
def local(tiny_model):
    return TransformersBackend(tiny_model, batch_size=4, device="cpu", cpu_threads=1)


@pytest.fixture(scope="module")
def server(local):
    import torch

    tok, model = local.tokenizer, local.model

    def complete(prompt: str, body: dict) -> dict:
        if not body.get("echo"):
            return {"text": local.generate([prompt], body["max_tokens"], stop=())[0]}
        ids = tok(prompt).input_ids
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        nxt = int(logprobs[-1].argmax())
        ids_out = ids[1:] + [nxt]  # echoed prompt tokens (after BOS), then the one generated token
        tokens = [tok.convert_ids_to_tokens(i) for i in ids_out]
        lps = [float(logprobs[j, ids[j + 1]]) for j in range(len(ids) - 1)] + [float(logprobs[-1, nxt])]
        tops = [
            {tok.convert_ids_to_tokens(int(logprobs[j].argmax())): float(logprobs[j].max())} for j in range(len(ids))
        ]
        offsets = [len(tok.decode(ids[1 : i + 1])) for i in range(len(ids))]  # text before each token
        return {
            "text": prompt,
            "logprobs": {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets},
        }

    def choice(path: str, body: dict, i: int) -> dict:
        assert path == "/v1/completions" and body["model"] == "kofin-tiny"
        return complete(body["prompt"][i], body)

    with completions_server(choice) as url:
        yield url


def test_endpoint_loglikelihood_and_generation_match_local(server, local):
    remote = EndpointBackend(server, "kofin-tiny", batch_size=3)
    requests = [
        ("정기예금을 만기 전에 해지하면\n정답:", " 중도해지이율"),
        ("환율", " 상승"),
        ("예금자보호 한도는", " 1억원"),
        ("대출 금리는 정답: ", "A"),
    ]
    theirs, ours = remote.loglikelihood(requests), local.loglikelihood(requests)
    assert [t.tokens for t in theirs] == [o.tokens for o in ours]
    assert [t.logprob for t in theirs] == pytest.approx([o.logprob for o in ours], abs=1e-4)
    assert [t.greedy for t in theirs] == [o.greedy for o in ours]
    prompts = ["대출 금리는", "환율이 오르면"]
    assert remote.generate(prompts, 6) == local.generate(prompts, 6)


def test_endpoint_must_be_on_an_allowed_host(tmp_path):
    with pytest.raises(ConfigError, match="endpoint host 'api.example.com' is not in allowed_hosts"):
        load_config(
            EvalConfig, None, [f"output_dir={tmp_path}/o", "models=[{name: v, endpoint: 'https://api.example.com/v1'}]"]
        )
