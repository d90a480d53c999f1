"""Every data builder on real statute text: configs/data/laws.yaml over ../shared/data/laws."""

from __future__ import annotations

import json
from pathlib import Path

from kofin.config import load_config
from kofin.data_ko.config import DataConfig
from kofin.data_ko.run import main
from kofin.rundir import require_complete

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "laws.yaml"


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_laws_build_covers_sft_dpo_raw_text_and_validation(tmp_path, laws_dir, tiny_model):
    cfg = load_config(DataConfig, CONFIG, [f"output_dir={tmp_path / 'laws'}"])
    out = main(cfg, quiet=True)
    manifest = require_complete(out, "data")
    assert manifest["inputs"], "the statute file must be recorded (with its hash) as an input"

    articles = {}
    for line in (laws_dir / "fin_articles.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        articles[row["id"]] = row["text"]

    sft_train, sft_eval = read(out / "sft" / "train.jsonl"), read(out / "sft" / "eval.jsonl")
    assert len(sft_train) > 2000 and len(sft_eval) > 50
    # Titles asked of an article are answered with that article's heading.
    checked = 0
    for row in sft_train[:300]:
        msgs = row["messages"]
        for q, _answer in zip(msgs[1::2], msgs[2::2], strict=True):
            if q["content"].startswith("이 글에 알맞은 제목"):
                doc_id = row["source"].split(":", 1)[1].rsplit("#", 1)[0]
                assert doc_id in articles, row["source"]
                checked += 1
    assert checked > 50

    # The split never puts pieces of one article on both sides.
    def docs(rows):
        return {r["source"].rsplit("#", 1)[0] for r in rows}

    assert not docs(sft_train) & docs(sft_eval)

    dpo = read(out / "dpo" / "train.jsonl")
    assert len(dpo) > 100
    for row in dpo[:50]:
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]

    raw = read(out / "sft" / "raw_text.jsonl")
    assert len(raw) > 2000 and all(r["text"].strip() for r in raw)

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["sft"]["tokens"]["over_max_seq_len"] >= 0 and report["sft"]["tokens"]["max"] > 0
    assert report["sft"]["split"]["eval_documents"] > 0
