"""kofin fedlora without Flower running: aggregation arithmetic, client-side DP and its epsilon, config errors.

The federated runs themselves (simulation, deployment) are in test_fedlora_sim.py and test_fedlora_deploy.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from kofin.config import ConfigError, load_config
from kofin.training.fedlora.aggregation import aggregate, fedavg, svd_aggregate
from kofin.training.fedlora.config import FedLoraConfig
from kofin.training.fedlora.dp import PrivacyLedger, privatize_update

LAYER = "base_model.model.model.layers.0.self_attn.q_proj."


def test_fedavg_is_the_hand_computed_sample_weighted_mean():
    a = {"x": np.array([1.0, 2.0], dtype=np.float32), "y": np.array([[0.0]], dtype=np.float32)}
    b = {"x": np.array([3.0, 6.0], dtype=np.float32), "y": np.array([[4.0]], dtype=np.float32)}
    c = {"x": np.array([-1.0, 0.0], dtype=np.float32), "y": np.array([[8.0]], dtype=np.float32)}
    out = fedavg([a, b, c], [10, 30, 60])
    # x: (10*1 + 30*3 + 60*-1)/100 = 0.4 ; (10*2 + 30*6 + 0)/100 = 2.0 ; y: (0 + 120 + 480)/100 = 6.0
    np.testing.assert_allclose(out["x"], [0.4, 2.0], rtol=1e-6)
    np.testing.assert_allclose(out["y"], [[6.0]], rtol=1e-6)
    assert out["x"].dtype == np.float32
    # Weights matter: the unweighted mean differs.
    assert not np.allclose(fedavg([a, b, c], [1, 1, 1])["x"], out["x"])


def test_fedavg_rejects_banks_with_other_tensors_and_bad_weights():
    with pytest.raises(ValueError, match="other tensors"):
        fedavg([{"x": np.zeros(2)}, {"z": np.zeros(2)}], [1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        fedavg([{"x": np.zeros(2)}], [0])


def _pair(rng, d_out=6, d_in=5, r=2, a=None):
    return {
        LAYER + "lora_A.weight": (a if a is not None else rng.normal(size=(r, d_in))).astype(np.float32),
        LAYER + "lora_B.weight": rng.normal(size=(d_out, r)).astype(np.float32),
        LAYER + "lora_magnitude_vector": rng.normal(size=(d_out,)).astype(np.float32),
    }


def _mean_product(adapters, weights):
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    return sum(
        wk * ad[LAYER + "lora_B.weight"].astype(np.float64) @ ad[LAYER + "lora_A.weight"].astype(np.float64)
        for wk, ad in zip(w, adapters, strict=True)
    )


def test_svd_aggregation_equals_the_mean_of_BA_when_that_mean_has_rank_r():
    rng = np.random.default_rng(0)
    shared_a = rng.normal(size=(2, 5))
    adapters = [_pair(rng, a=shared_a) for _ in range(3)]  # shared A: mean(B_k A) = mean(B_k) A has rank 2
    weights = [5, 1, 2]
    out = svd_aggregate(adapters, weights)
    product = out.arrays[LAYER + "lora_B.weight"].astype(np.float64) @ out.arrays[LAYER + "lora_A.weight"]
    np.testing.assert_allclose(product, _mean_product(adapters, weights), atol=1e-5)
    assert out.max_residual is not None and out.max_residual < 1e-6
    assert out.arrays[LAYER + "lora_A.weight"].shape == (2, 5) and out.arrays[LAYER + "lora_B.weight"].shape == (6, 2)
    # DoRA's magnitude vectors are the sample-weighted mean, as in fedavg.
    np.testing.assert_allclose(
        out.arrays[LAYER + "lora_magnitude_vector"],
        fedavg(adapters, weights)[LAYER + "lora_magnitude_vector"],
        rtol=1e-6,
    )


def test_fedavg_of_A_and_B_is_not_the_mean_update_and_svd_is_its_best_rank_r_approximation():
    rng = np.random.default_rng(1)
    adapters = [_pair(rng) for _ in range(3)]
    weights = [1, 2, 3]
    target = _mean_product(adapters, weights)
    avg = fedavg(adapters, weights)
    naive = avg[LAYER + "lora_B.weight"].astype(np.float64) @ avg[LAYER + "lora_A.weight"]
    assert np.linalg.norm(naive - target) / np.linalg.norm(target) > 0.1  # the cross terms B_j A_k
    out = aggregate("svd", adapters, weights)
    product = out.arrays[LAYER + "lora_B.weight"].astype(np.float64) @ out.arrays[LAYER + "lora_A.weight"]
    u, s, vt = np.linalg.svd(target)
    best = (u[:, :2] * s[:2]) @ vt[:2]  # Eckart-Young: the best rank-2 approximation
    np.testing.assert_allclose(product, best, atol=1e-4)
    expected_residual = np.sqrt((s[2:] ** 2).sum() / (s**2).sum())
    assert out.max_residual == pytest.approx(expected_residual, rel=1e-4)
    assert np.linalg.norm(product - target) < np.linalg.norm(naive - target)


def test_dp_clips_the_update_and_adds_noise():
    rng = np.random.default_rng(2)
    global_ = {"x": rng.normal(size=(50,)).astype(np.float32)}
    local = {"x": global_["x"] + 10.0}  # update norm 10 * sqrt(50) ~ 70.7
    tiny_noise, norms = privatize_update(local, global_, clip_norm=1.0, noise_multiplier=1e-9, seed=0)
    assert norms["update_norm"] == pytest.approx(10 * np.sqrt(50), rel=1e-5)
    assert np.linalg.norm(tiny_noise["x"] - global_["x"]) == pytest.approx(1.0, rel=1e-4)  # clipped to C
    noisy, _ = privatize_update(local, global_, clip_norm=1.0, noise_multiplier=1.0, seed=0)
    noise = noisy["x"] - tiny_noise["x"]
    assert noise.std() == pytest.approx(1.0, rel=0.3)  # sigma = z * C
    other_seed, _ = privatize_update(local, global_, clip_norm=1.0, noise_multiplier=1.0, seed=1)
    assert not np.allclose(other_seed["x"], noisy["x"])


def test_epsilon_composes_over_rounds_as_opacus_computes_it():
    from opacus.accountants import RDPAccountant

    ledger = PrivacyLedger(noise_multiplier=1.1, delta=1e-5)
    first = ledger.record_round(["bank_a", "bank_b"])
    second = ledger.record_round(["bank_a"])
    reference = RDPAccountant()
    for _ in range(2):
        reference.step(noise_multiplier=1.1, sample_rate=1.0)
    assert second["bank_a"] == pytest.approx(reference.get_epsilon(delta=1e-5))
    assert second["bank_a"] > first["bank_a"] > 0
    assert ledger.epsilon("bank_b") == pytest.approx(first["bank_b"])  # bank_b sat out round 2
    louder = PrivacyLedger(noise_multiplier=4.0, delta=1e-5)
    assert louder.record_round(["bank_a"])["bank_a"] < first["bank_a"]
    again = PrivacyLedger.from_json(ledger.to_json(), 1.1, 1e-5)  # what a resumed server reads back
    assert again.epsilon("bank_a") == pytest.approx(second["bank_a"])


def _write(tmp_path, text):
    path = tmp_path / "fed.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BANKS = "banks:\n  - {name: bank_a, data: a.jsonl}\n  - {name: bank_b, data: b.jsonl}\n"


def test_config_errors_name_the_key_and_line(tmp_path):
    path = _write(tmp_path, "output_dir: out\n" + BANKS + "rounds:\n  min_available_clients: 3\n  num_roundz: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(FedLoraConfig, path)
    text = str(err.value)
    assert "fed.yaml:7  rounds.num_roundz: unknown key; did you mean 'num_rounds'?" in text
    path = _write(tmp_path, "output_dir: out\n" + BANKS + "rounds:\n  min_available_clients: 3\n")
    with pytest.raises(ConfigError, match="min_available_clients 3 > 2 banks"):
        load_config(FedLoraConfig, path)
    with pytest.raises(ConfigError, match=r"banks\.1\.data"):
        two_banks = "output_dir: out\nbanks:\n  - {name: a, data: a.jsonl}\n  - {name: b}\n"
        load_config(FedLoraConfig, _write(tmp_path, two_banks))
    with pytest.raises(ConfigError, match="never holds a bank's data path; remove banks.0.data"):
        load_config(FedLoraConfig, _write(tmp_path, "output_dir: out\n" + BANKS + "engine: {kind: deployment}\n"))
    with pytest.raises(ConfigError, match="bank name 'Bank A'"):
        load_config(FedLoraConfig, _write(tmp_path, "output_dir: out\nbanks: [{name: Bank A, data: a.jsonl}]\n"))
    with pytest.raises(ConfigError, match=r"shard \[3, 3\]"):
        load_config(FedLoraConfig, _write(tmp_path, "output_dir: out\nbanks: [{name: a, data: a, shard: [3, 3]}]\n"))
    with pytest.raises(ConfigError, match="unknown part 'lorax'"):
        load_config(FedLoraConfig, _write(tmp_path, "output_dir: out\nmethod: lorax\n" + BANKS))
    path = _write(tmp_path, "output_dir: out\n" + BANKS + "secagg: true\naggregation: {method: svd}\n")
    with pytest.raises(ConfigError) as err:
        load_config(FedLoraConfig, path)
    assert "secagg.enabled with aggregation.method svd" in str(err.value) and "use aggregation.method: fedavg" in str(
        err.value
    )
    with pytest.raises(ConfigError, match="fed.yaml:5  secagg.num_shares: .*num_shares 2: a fraction"):
        load_config(FedLoraConfig, _write(tmp_path, "output_dir: out\n" + BANKS + "secagg: {num_shares: 2}\n"))
    with pytest.raises(ConfigError, match="needs rounds.min_available_clients >= 2"):
        one = "rounds: {min_available_clients: 1}\nsecagg: true\n"
        load_config(FedLoraConfig, _write(tmp_path, "output_dir: out\n" + BANKS + one))
    with pytest.raises(ConfigError, match="superlink 'nohost' must be host:port"):
        load_config(
            FedLoraConfig,
            _write(
                tmp_path,
                "output_dir: out\nbanks: [{name: a}]\nrounds: {min_available_clients: 1}\n"
                "engine: {kind: deployment, superlink: nohost}\n",
            ),  # fmt: skip
        )


def test_the_bundled_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "fedlora"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert "tiny.yaml" in names
    for path in root.glob("*.yaml"):
        cfg = load_config(FedLoraConfig, path)
        assert len(cfg.banks) >= 2


def test_a_bank_refuses_a_secagg_round_it_would_overweight_or_clip(tmp_path):
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from kofin.training.fedlora.client import KEY_NUM_EXAMPLES, BankDataError
    from kofin.training.fedlora.secagg import secure_fit_reply

    text = "output_dir: out\n" + BANKS + "secagg: {enabled: true, max_weight: 10, clipping_range: 1.0}\n"
    cfg = load_config(FedLoraConfig, _write(tmp_path, text))
    arrays = {"b": np.full((2, 2), 1.5, np.float32), "a": np.array([0.25], np.float32)}
    metrics = {KEY_NUM_EXAMPLES: 6.0, "train-loss": 1.0}
    reply = compat.recorddict_to_fitres(secure_fit_reply(cfg, "bank_a", arrays, metrics, "d1", ["a", "b"]), False)
    # 1.5 * 6/10 = 0.9 fits the range; the arrays go out in the server's order, as float64 for the mod's arithmetic.
    out = parameters_to_ndarrays(reply.parameters)
    assert [a.dtype for a in out] == [np.float64, np.float64] and out[0].shape == (1,) and out[1][0, 0] == 1.5
    assert reply.num_examples == 6 and reply.metrics["bank"] == "bank_a" and reply.metrics["data-sha256"] == "d1"
    with pytest.raises(BankDataError, match="bank bank_a: 11 training chats is more than secagg.max_weight 10"):
        secure_fit_reply(cfg, "bank_a", arrays, {KEY_NUM_EXAMPLES: 11.0}, "d1", ["a", "b"])
    with pytest.raises(BankDataError, match="weighted adapter value 1.2 lies outside secagg.clipping_range 1"):
        secure_fit_reply(cfg, "bank_a", arrays, {KEY_NUM_EXAMPLES: 8.0}, "d1", ["a", "b"])
    # Under DP every weight is 1, and so is the bound: max_weight does not apply.
    dp = cfg.model_copy(update={"differential_privacy": cfg.differential_privacy.model_copy(update={"enabled": True})})
    with pytest.raises(BankDataError, match="weighted adapter value 1.5"):
        secure_fit_reply(dp, "bank_a", arrays, {KEY_NUM_EXAMPLES: 1.0}, "d1", ["a", "b"])
