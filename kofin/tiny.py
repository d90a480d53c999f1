"""The embedded tiny model: EEVE's architecture and chat template, scaled down, built in seconds.

kofin must run end to end where no weights can be downloaded. So it builds its own model:
a `LlamaForCausalLM` shaped like yanolja/EEVE-Korean-10.8B-v1.0 (SiLU MLP at 3.5x width, grouped
KV heads at 4:1, RMSNorm, RoPE, untied embeddings) and a Korean byte-level BPE tokenizer trained
on the bundled knowledge base. Same seed and corpus -> the same bytes, so tests can pin hashes.

    from kofin.tiny import default_tiny_model
    path = default_tiny_model()   # built once into $KOFIN_HOME/models/, then reused
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from kofin.config import ResolvedPath, StageConfig
from kofin.rundir import is_complete, open_run

# Bump when the build recipe changes so cached models are rebuilt, not reused.
TINY_FORMAT = 2

EEVE_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# EEVE-Korean-Instruct's "Human:/Assistant:" format. The {% generation %} markers let TRL and
# transformers build assistant-only loss masks; eos after each answer teaches the model to stop.
# The space after "Assistant:" belongs to the answer, and the generation prompt ends at the colon:
# byte-level BPE glues a space to the following word, so a prompt ending in "Assistant: " would
# tokenize differently at inference than the same text did in training.
EEVE_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}"
    "{% set system_message = '" + EEVE_SYSTEM_PROMPT.replace("'", "\\'") + "' %}{% endif %}"
    "{{ system_message }}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ '\\nHuman: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '\\nAssistant:' }}"
    "{% generation %}{{ ' ' + message['content'] + eos_token }}{% endgeneration %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\nAssistant:' }}{% endif %}"
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in EEVE (Llama/SOLAR lineage)


class TinyConfig(StageConfig):
    """Shape of the tiny model. Defaults: EEVE's ratios at hidden 128, 4 layers (~2.6M params)."""

    seed: int = Field(0, description="Seed for weight initialisation; same seed -> same weights.")
    num_hidden_layers: int = Field(4, gt=0, description="Decoder layers (EEVE: 48).")
    hidden_size: int = Field(128, gt=0, description="Model width (EEVE: 4096).")
    intermediate_size: int = Field(448, gt=0, description="MLP width (EEVE: 14336, i.e. 3.5x hidden).")
    num_attention_heads: int = Field(4, gt=0, description="Query heads (EEVE: 32).")
    num_key_value_heads: int = Field(1, gt=0, description="KV heads for grouped-query attention (EEVE: 8).")
    vocab_size: int = Field(
        8192, ge=512, description="Target BPE vocabulary (EEVE: 40960); padded to a multiple of 64."
    )
    max_position_embeddings: int = Field(4096, gt=0, description="Context length (EEVE: 4096).")
    corpus: ResolvedPath | None = Field(
        None,
        description="Text to train the tokenizer on (a file or folder, relative to the config); "
        "default: the bundled knowledge base.",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        return self


def _corpus_texts(corpus: Path | None) -> list[str]:
    from kofin.data_ko.corpus import corpus_text

    return list(corpus_text(corpus))


def _transformers() -> Any:
    """transformers, typed as Any: its classes are partly unannotated (mypy --strict refuses to call
    them), and the strict core keeps its checks everywhere else."""
    import transformers
    import transformers.utils.logging

    return transformers


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Byte-level BPE (any Korean text encodes; no unknown characters), wrapped for transformers
    (a PreTrainedTokenizerFast)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    # NFC: Korean typed on macOS arrives decomposed (NFD jamo); compose it so 한 is one symbol.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    # Like EEVE's Llama tokenizer: <s> is prepended, </s> is not (the chat template adds it).
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return _transformers().PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",  # Llama convention (pad id 0); keeps eos labels unmasked in trainers
        chat_template=EEVE_CHAT_TEMPLATE,
        model_max_length=4096,
        padding_side="right",
    )


def main(cfg: TinyConfig, *, quiet: bool = False) -> Path:
    """Build the tokenizer and model into cfg.output_dir as a complete run directory. `quiet` is
    accepted for the one stage signature: the build prints nothing."""
    import torch

    transformers = _transformers()

    from kofin.data_ko.corpus import bundled_kb_dir

    transformers.utils.logging.disable_progress_bar()  # a 10 MB save needs no "Writing model shards" bar
    texts = _corpus_texts(cfg.corpus)
    with open_run("tiny", cfg, inputs={"corpus": cfg.corpus or bundled_kb_dir()}) as run:
        tokenizer = train_tokenizer(texts, cfg.vocab_size)
        vocab = -(-len(tokenizer) // 64) * 64
        config = transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            max_position_embeddings=cfg.max_position_embeddings,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            hidden_act="silu",
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            initializer_range=0.02,
        )
        torch.manual_seed(cfg.seed)
        model = transformers.LlamaForCausalLM(config).eval()
        model.generation_config.pad_token_id = 0
        model.save_pretrained(run.path, safe_serialization=True)
        tokenizer.save_pretrained(run.path)
        n_params = sum(p.numel() for p in model.parameters())
        run.metrics.update(
            parameters=n_params,
            tokenizer_vocab=len(tokenizer),
            corpus_documents=len(texts),
            corpus_chars=sum(len(t) for t in texts),
        )
    return cfg.output_dir


# The name library callers and tests know; the stage record calls it `main`.
build_tiny_model = main


def kofin_home() -> Path:
    return Path(os.environ.get("KOFIN_HOME") or Path.home() / ".cache" / "kofin")


def default_tiny_config(output_dir: Path | None = None, seed: int = 0) -> TinyConfig:
    if output_dir is None:
        spec = TinyConfig(output_dir=Path("unused"), seed=seed).model_dump(mode="json", exclude={"output_dir"})
        corpus = hashlib.sha256("\0".join(_corpus_texts(None)).encode()).hexdigest()
        digest = hashlib.sha256(json.dumps([TINY_FORMAT, spec, corpus], sort_keys=True).encode()).hexdigest()
        output_dir = kofin_home() / "models" / f"tiny-{digest[:12]}"
    return TinyConfig(output_dir=output_dir, seed=seed)


def default_tiny_model(seed: int = 0) -> Path:
    """Path of the embedded tiny model, built on first use. Safe when several processes ask at once.

    Another seed gives a sibling with the same tokenizer and other weights (the merge stage's
    stand-in for an instruct model)."""
    cfg = default_tiny_config(seed=seed)
    if is_complete(cfg.output_dir):
        return cfg.output_dir
    cfg.output_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(cfg.output_dir.parent / ".tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and then reuse its result
        if not is_complete(cfg.output_dir):
            build_tiny_model(cfg)
    return cfg.output_dir
