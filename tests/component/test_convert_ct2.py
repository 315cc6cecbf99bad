"""The CT2 -> transformers converter: exact tensors, loadable offline, atomic and stamped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from gpu_worker.weights import bundled
from gpu_worker.weights.convert_ct2 import STAMP_FILE, converted, main
from gpu_worker.weights.ct2_format import read_ct2_model


def test_converted_tensors_equal_the_ct2_float16_values() -> None:
    ct2 = read_ct2_model(bundled.tiny_en_ct2() / "model.bin")
    hf = load_file(str(bundled.tiny_en_hf() / "model.safetensors"))
    d = 384
    fused = ct2["encoder/layer_0/self_attention/linear_0/weight"]
    assert fused.shape == (3 * d, d)
    enc = "model.encoder.layers.0.self_attn"
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert np.array_equal(hf[f"{enc}.{name}.weight"], fused[i * d : (i + 1) * d])
    bias = ct2["encoder/layer_0/self_attention/linear_0/bias"]
    assert not bias[d : 2 * d].any()  # the k third is zeros in CT2 ...
    assert f"{enc}.k_proj.bias" not in hf  # ... and absent in HF
    assert np.array_equal(hf[f"{enc}.v_proj.bias"], bias[2 * d :])
    cross = ct2["decoder/layer_3/attention/linear_1/weight"]
    assert np.array_equal(hf["model.decoder.layers.3.encoder_attn.k_proj.weight"], cross[:d])
    assert np.array_equal(hf["model.decoder.layers.3.encoder_attn.v_proj.weight"], cross[d:])
    pairs = {
        "model.encoder.conv1.weight": "encoder/conv1/weight",
        "model.decoder.embed_tokens.weight": "decoder/projection/weight",  # an alias
        "model.encoder.embed_positions.weight": "encoder/position_encodings/encodings",
        "model.decoder.layers.2.fc2.bias": "decoder/layer_2/ffn/linear_1/bias",
        "model.decoder.layer_norm.weight": "decoder/layer_norm/gamma",
        "model.encoder.layers.1.final_layer_norm.bias": "encoder/layer_1/ffn/layer_norm/beta",
    }
    for hf_name, ct2_name in pairs.items():
        assert hf[hf_name].dtype == np.float16
        assert np.array_equal(hf[hf_name], ct2[ct2_name]), hf_name


def test_the_checkpoint_loads_offline_with_a_whisper_generation_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import GenerationConfig, WhisperConfig, WhisperProcessor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = bundled.tiny_en_hf()
    config = WhisperConfig.from_pretrained(path, local_files_only=True)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (384, 4, 4)
    assert config.vocab_size == 51864
    generation = GenerationConfig.from_pretrained(path, local_files_only=True).to_dict()
    assert generation["is_multilingual"] is False
    assert generation["decoder_start_token_id"] == 50257
    assert generation["no_timestamps_token_id"] == 50362
    assert [1, 0] in generation["alignment_heads"]
    processor = WhisperProcessor.from_pretrained(path, local_files_only=True)
    assert processor.tokenizer.decode([383, 2068]) == " The quick"


def test_conversion_is_atomic_stamped_and_redone_when_half_written(tmp_path: Path) -> None:
    src = bundled.tiny_en_ct2()
    dst = tmp_path / "hf"
    assert main([str(src), str(dst)]) == 0
    assert json.loads((dst / STAMP_FILE).read_text())["model_bin_bytes"] > 0
    assert main([str(src), str(dst)]) == 1  # never over an existing directory
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary left behind

    (dst / STAMP_FILE).unlink()  # as if a conversion had died before its stamp
    (dst / "model.safetensors").write_bytes(b"half")
    assert converted(src, dst) == dst
    assert (dst / STAMP_FILE).is_file()
    assert (dst / "model.safetensors").stat().st_size > 1_000_000
