"""Config of the merge stage.

Run as:
    kofin merge --config configs/merge/tiny.yaml [key.path=value ...]

`kofin merge --help` lists every key below with its default and description. Parameters are
mergekit's own (`t`, `weight`, `density`, `lambda`, `normalize`, ...): a number, a list of numbers
interpolated across the layers (a per-layer gradient), or a list of `{filter, value}` entries
where `filter` matches part of a tensor name (`self_attn`, `mlp`) and a filterless entry is the
fallback. They are written into mergekit's YAML unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kofin.config import KofinModel, ResolvedPath, StageConfig

Method = Literal["slerp", "linear", "ties", "dare_ties", "task_arithmetic", "model_stock"]

# Methods that merge task vectors (model - base): their base is the pre-trained model the
# adapter was trained on, and the tuned and instruct models both enter as deltas from it.
TASK_VECTOR_METHODS = ("ties", "dare_ties", "task_arithmetic", "model_stock")
# mergekit refuses these methods without a `weight` on every input model; say so at load time.
NEEDS_WEIGHT = ("linear", "ties", "dare_ties", "task_arithmetic")


class FilteredValue(KofinModel):
    filter: str | None = Field(
        None, description="Part of a tensor name this value applies to (e.g. self_attn); null = every tensor."
    )
    value: bool | float | list[float] = Field(description="A number, or a per-layer gradient list.")


ParameterValue = bool | float | list[float] | list[FilteredValue]


class OtherModel(KofinModel):
    path: ResolvedPath | None = Field(
        None, description="Local Hugging Face model folder (e.g. /models/yanolja/EEVE-Korean-Instruct-10.8B-v1.0)."
    )
    tiny_seed: int | None = Field(
        None, description="Instead of path: kofin's embedded tiny model built with this seed (demo and tests)."
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict, description="mergekit per-model parameters, e.g. weight, density."
    )

    @model_validator(mode="after")
    def _one_source(self) -> OtherModel:
        if (self.path is None) == (self.tiny_seed is None):
            raise ValueError("set exactly one of path (a local model folder) or tiny_seed (kofin's tiny model)")
        return self


class MergekitOptions(KofinModel):
    """Passed to mergekit's MergeOptions; none of them changes the merged weights."""

    lazy_unpickle: bool = Field(True, description="Read tensors lazily (out-of-core) instead of whole shards.")
    low_cpu_memory: bool = Field(False, description="Keep intermediate results on the accelerator (when VRAM > RAM).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where mergekit does the arithmetic; auto = cuda if present."
    )
    out_shard_size: str = Field(
        "5B",
        pattern=r"^\d+(\.\d+)?[KMB]?$",
        description="Parameters per output shard, mergekit notation (5B, 500M, 1M).",
    )
    random_seed: int = Field(0, description="Seed for randomised methods (dare_ties): same seed, same weights.")


class ChecksConfig(KofinModel):
    probe_file: ResolvedPath | None = Field(
        None,
        description="Held-out Korean text for the perplexity probe (passages separated by blank lines); "
        "null = merge/heldout_ko.txt, bank-domain passages written for this probe and never used for training.",
    )
    probe_max_tokens: int = Field(256, ge=8, description="Tokens per passage scored in the probe.")
    generate_tokens: int = Field(8, ge=1, description="Tokens the merged model must generate in the load check.")
    generate_prompt: str = Field(
        "예금자보호 한도는 얼마인가요?", description="User turn for the generation check (chat template applied)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the checks run the models; auto = cuda if present."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="dtype the checks run the models in; auto = the merge dtype on GPU, float32 on CPU (bf16 matmuls "
        "are emulated and slow on most CPUs; float32 holds bf16 weights exactly but needs twice the RAM).",
    )


class MergeConfig(StageConfig):
    tuned_run: ResolvedPath = Field(
        description="`kofin dpo`, `kofin sft` or `kofin fedlora` run directory; its adapter (after any adapters it "
        "was trained on top of) is merged into the bf16 base first."
    )
    base_model: ResolvedPath | None = Field(
        None, description="Local folder of the base the adapter was trained on; null = the path the run recorded."
    )
    tuned_parameters: dict[str, ParameterValue] = Field(
        default_factory=dict, description="mergekit parameters of the tuned model, e.g. weight, density."
    )
    models: list[OtherModel] = Field(min_length=1, description="The other models to merge with (e.g. EEVE-Instruct).")
    method: Method = Field(
        "slerp",
        description="slerp (tuned -> other by t), linear, ties, dare_ties, task_arithmetic, model_stock "
        "(the last four merge task vectors against base_model).",
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict, description="mergekit global parameters, e.g. t: [0, 0.5, 0.3, 0.7, 1] for slerp."
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype of the adapter merge and of the merged model (never 4-bit)."
    )
    tokenizer_source: Literal["base", "union", "model"] | None = Field(
        None,
        description="null: every model must share the tuned model's vocabulary (checked before merging); "
        "base / union / model (tokenizer_model's): mergekit builds that vocabulary and remaps each model's "
        "embedding rows to it (a token only one model knows takes that model's row in every model).",
    )
    tokenizer_model: ResolvedPath | None = Field(
        None, description="Local model folder whose tokenizer to use with tokenizer_source: model."
    )
    options: MergekitOptions = Field(default_factory=MergekitOptions, description="mergekit execution options.")
    checks: ChecksConfig = Field(default_factory=ChecksConfig, description="Post-merge checks.")

    @model_validator(mode="after")
    def _method_inputs(self) -> MergeConfig:
        if self.method == "slerp":
            if len(self.models) != 1:
                raise ValueError(
                    f"method slerp interpolates between two models: the tuned one and exactly one entry "
                    f"in models (got {len(self.models)}); use linear, ties or model_stock for more"
                )
            if "t" not in self.parameters:
                raise ValueError(
                    "method slerp needs parameters.t: 0 = the tuned model, 1 = the other model, "
                    "a list = a per-layer gradient, e.g. t: [0, 0.5, 0.3, 0.7, 1]"
                )
        if (self.tokenizer_source == "model") != (self.tokenizer_model is not None):
            raise ValueError("tokenizer_source: model goes with tokenizer_model: PATH (and only with it)")
        if self.method == "model_stock" and (self.tuned_parameters or any(m.parameters for m in self.models)):
            raise ValueError(
                "method model_stock computes each model's weight itself; remove tuned_parameters and "
                "models.*.parameters (filter_wise goes under parameters)"
            )
        if self.method in NEEDS_WEIGHT:
            missing = (["tuned_parameters"] if "weight" not in self.tuned_parameters else []) + [
                f"models.{i}.parameters" for i, m in enumerate(self.models) if "weight" not in m.parameters
            ]
            if missing:
                raise ValueError(
                    f"method {self.method} needs a weight for every model; add weight to {', '.join(missing)}"
                )
        return self
