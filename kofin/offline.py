"""The one place that makes kofin offline: every command and every library import goes through it.

kofin runs in air-gapped bank networks. Hub downloads must fail loudly instead of hanging, and
no library may phone home (axolotl's telemetry alone retries for minutes with no network).
"""

from __future__ import annotations

import os

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "WANDB_DISABLED": "true",
    "MLFLOW_TRACKING_URI": "",
    "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    "ANONYMIZED_TELEMETRY": "False",  # chromadb and friends
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "UNSLOTH_DISABLE_STATISTICS": "1",  # unsloth phones home with model statistics unless told not to
    "FLWR_TELEMETRY_ENABLED": "0",  # Flower (kofin fedlora) sends usage events unless told not to
    "FLWR_DISABLE_UPDATE_CHECK": "1",  # every Flower process asks api.flower.ai for a newer release at start
    "RAY_USAGE_STATS_ENABLED": "0",  # Flower's simulation runs on Ray, which reports usage unless told not to
    "TOKENIZERS_PARALLELISM": "false",  # no fork warnings from the Rust pool in subprocesses
}


def apply_offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Force the offline settings into `environ` (default: this process) and return it.

    Values are overwritten, not defaulted: a shell that exported HF_HUB_OFFLINE=0 must not
    turn a bank deployment back online. Subprocesses inherit os.environ, so axolotl and
    accelerate launched by kofin are offline too.
    """
    env = os.environ if environ is None else environ
    env.update(OFFLINE_ENV)
    return env  # type: ignore[return-value]


def check_endpoint_host(url: str, allowed_hosts: list[str], key: str) -> None:
    """Raise ValueError unless `url` names a host in `allowed_hosts` (config keys that point at an
    OpenAI-compatible server: serve's base_url, eval's endpoint)."""
    from urllib.parse import urlparse

    host = urlparse(url).hostname
    if not host:
        raise ValueError(f"{key} {url!r} is not a URL like http://127.0.0.1:8000/v1")
    if host not in allowed_hosts:
        raise ValueError(
            f"{key} host {host!r} is not in allowed_hosts {allowed_hosts}; kofin is offline by design — "
            "add the internal host to allowed_hosts"
        )
