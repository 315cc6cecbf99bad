"""CTranslate2 Whisper -> Hugging Face ``WhisperForConditionalGeneration`` checkpoint.

Lossless for float16/float32 CT2 models (tensors are copied, never re-quantised). The
result loads offline with ``WhisperProcessor.from_pretrained`` and
``WhisperForConditionalGeneration.from_pretrained``. Usage::

    python -m gpu_worker.weights.convert_ct2 SRC_DIR DST_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gpu_worker.weights.ct2_format import Ct2FormatError, Ct2Model, layer_count, read_ct2_model

STAMP_FILE: Final = "converted-from-ct2.json"
CONVERTER_VERSION: Final = 1
# HF's own rule (and CTranslate2's): the multilingual vocabulary has 51865+ tokens.
MULTILINGUAL_VOCAB: Final = 51865

Tensors = dict[str, npt.NDArray[np.generic]]


def _split(array: npt.NDArray[np.generic], parts: int) -> list[npt.NDArray[np.generic]]:
    return [np.ascontiguousarray(part) for part in np.split(array, parts, axis=0)]


def _linear(out: Tensors, hf: str, model: Ct2Model, ct2: str) -> None:
    out[f"{hf}.weight"] = model[f"{ct2}/weight"]
    out[f"{hf}.bias"] = model[f"{ct2}/bias"]


def _norm(out: Tensors, hf: str, model: Ct2Model, ct2: str) -> None:
    out[f"{hf}.weight"] = model[f"{ct2}/gamma"]
    out[f"{hf}.bias"] = model[f"{ct2}/beta"]


def _fused(out: Tensors, hf_prefix: str, names: tuple[str, ...], model: Ct2Model, ct2: str) -> None:
    """Split a fused projection; HF's ``k_proj`` has no bias (CT2 stores zeros there)."""
    weights = _split(model[f"{ct2}/weight"], len(names))
    biases = _split(model[f"{ct2}/bias"], len(names))
    for name, weight, bias in zip(names, weights, biases, strict=True):
        out[f"{hf_prefix}.{name}.weight"] = weight
        if name == "k_proj":
            if np.any(bias != 0):
                raise Ct2FormatError(f"{ct2}: the k bias is not zero; it cannot be dropped")
        else:
            out[f"{hf_prefix}.{name}.bias"] = bias


def hf_state_dict(model: Ct2Model) -> Tensors:
    """The HF tensors of a CT2 Whisper model, under HF names, dtypes as stored."""
    out: Tensors = {}
    for conv in ("conv1", "conv2"):
        _linear(out, f"model.encoder.{conv}", model, f"encoder/{conv}")
    for side in ("encoder", "decoder"):
        out[f"model.{side}.embed_positions.weight"] = model[f"{side}/position_encodings/encodings"]
        _norm(out, f"model.{side}.layer_norm", model, f"{side}/layer_norm")
        for i in range(layer_count(model.variables, side)):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _fused(out, f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), model,
                   f"{ct2}/self_attention/linear_0")  # fmt: skip
            _linear(out, f"{hf}.self_attn.out_proj", model, f"{ct2}/self_attention/linear_1")
            _norm(out, f"{hf}.self_attn_layer_norm", model, f"{ct2}/self_attention/layer_norm")
            if side == "decoder":
                _linear(out, f"{hf}.encoder_attn.q_proj", model, f"{ct2}/attention/linear_0")
                _fused(out, f"{hf}.encoder_attn", ("k_proj", "v_proj"), model,
                       f"{ct2}/attention/linear_1")  # fmt: skip
                _linear(out, f"{hf}.encoder_attn.out_proj", model, f"{ct2}/attention/linear_2")
                _norm(out, f"{hf}.encoder_attn_layer_norm", model, f"{ct2}/attention/layer_norm")
            _linear(out, f"{hf}.fc1", model, f"{ct2}/ffn/linear_0")
            _linear(out, f"{hf}.fc2", model, f"{ct2}/ffn/linear_1")
            _norm(out, f"{hf}.final_layer_norm", model, f"{ct2}/ffn/layer_norm")
    out["model.decoder.embed_tokens.weight"] = model["decoder/embeddings/weight"]
    return out


def _token_ids(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    ids: dict[str, int] = dict(tokenizer_json["model"]["vocab"])
    ids.update({t["content"]: t["id"] for t in tokenizer_json["added_tokens"]})
    return ids


def _ids_list(value: Any) -> list[int]:
    """CT2's config.json writes some id lists as JSON inside a string."""
    return [int(v) for v in (json.loads(value) if isinstance(value, str) else value)]


def whisper_configs(model: Ct2Model, ct2_config: dict[str, Any], tokens: dict[str, int]) -> tuple[
    dict[str, Any], dict[str, Any]
]:  # fmt: skip
    """(config.json, generation_config.json) contents for the converted model."""
    vocab, d_model = model["decoder/embeddings/weight"].shape
    multilingual = vocab >= MULTILINGUAL_VOCAB
    eot, sot = tokens["<|endoftext|>"], tokens["<|startoftranscript|>"]
    no_timestamps = tokens["<|notimestamps|>"]
    suppress = _ids_list(ct2_config.get("suppress_ids", []))
    begin_suppress = _ids_list(ct2_config.get("suppress_ids_begin", [220, eot]))
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": int(vocab),
        "num_mel_bins": int(model["encoder/conv1/weight"].shape[1]),
        "d_model": int(d_model),
        "encoder_layers": layer_count(model.variables, "encoder"),
        "decoder_layers": layer_count(model.variables, "decoder"),
        "encoder_attention_heads": model.scalar("encoder/num_heads"),
        "decoder_attention_heads": model.scalar("decoder/num_heads"),
        "encoder_ffn_dim": int(model["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(model["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(model["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(model["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "pad_token_id": eot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "decoder_start_token_id": sot,
        "dtype": "float16",
    }
    lang_ids = _ids_list(ct2_config.get("lang_ids", []))
    by_id = {i: t for t, i in tokens.items()}
    generation: dict[str, Any] = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": config["max_target_positions"],
        "no_timestamps_token_id": no_timestamps,
        "prev_sot_token_id": tokens["<|startofprev|>"],
        "max_initial_timestamp_index": 50,
        "suppress_tokens": suppress,
        "begin_suppress_tokens": begin_suppress,
        "alignment_heads": [list(h) for h in ct2_config.get("alignment_heads", [])],
        "is_multilingual": multilingual,
        "return_timestamps": False,
    }
    if multilingual:
        generation["lang_to_id"] = {by_id[i]: i for i in lang_ids if i in by_id}
        generation["task_to_id"] = {
            "transcribe": tokens["<|transcribe|>"],
            "translate": tokens["<|translate|>"],
        }
    return config, generation


def _tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "WhisperTokenizer",
        "model_max_length": 1024,
        "add_prefix_space": False,
        "errors": "replace",
        "unk_token": "<|endoftext|>",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }


def _preprocessor_config(num_mel_bins: int) -> dict[str, Any]:
    return {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": num_mel_bins,
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }


def source_stamp(src: Path) -> dict[str, Any]:
    """What identifies a source model: a different stamp means convert again."""
    stat = (src / "model.bin").stat()
    return {"converter": CONVERTER_VERSION, "model_bin_bytes": stat.st_size,
            "model_bin_mtime_ns": stat.st_mtime_ns}  # fmt: skip


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def convert(src: str | Path, dst: str | Path) -> Path:
    """Convert the CT2 model directory ``src`` into the HF checkpoint directory ``dst``.

    Written to a temporary sibling first and renamed into place, so ``dst`` is either
    absent or complete. ``dst`` must not exist.
    """
    from safetensors.numpy import save_file

    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; remove it to convert again")
    model = read_ct2_model(src / "model.bin")
    if model.spec != "WhisperSpec":
        raise Ct2FormatError(f"{src}: a {model.spec}, not a Whisper model")
    ct2_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    tokenizer_json = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = _token_ids(tokenizer_json)
    config, generation = whisper_configs(model, ct2_config, tokens)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        save_file(hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", generation)
        _write_json(tmp / "preprocessor_config.json", _preprocessor_config(config["num_mel_bins"]))
        _write_json(tmp / "tokenizer_config.json", _tokenizer_config())
        shutil.copyfile(src / "tokenizer.json", tmp / "tokenizer.json")
        _write_json(tmp / STAMP_FILE, source_stamp(src))  # last: marks a complete conversion
        tmp.chmod(0o755)  # mkdtemp made it private; the checkpoint is for any reader
        try:
            os.replace(tmp, dst)
        except OSError as exc:  # another process renamed its conversion into place first
            raise FileExistsError(f"{dst} appeared while converting") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def is_converted_from(dst: Path, src: Path) -> bool:
    stamp = dst / STAMP_FILE
    if not stamp.is_file():
        return False
    try:
        return bool(json.loads(stamp.read_text(encoding="utf-8")) == source_stamp(src))
    except ValueError:
        return False


def converted(src: Path, dst: Path) -> Path:
    """``dst`` converted from ``src``, converting only when missing or stale."""
    if is_converted_from(dst, src):
        return dst
    if dst.exists():  # stale or from an older converter: set aside, then replace
        shutil.rmtree(dst)
    try:
        return convert(src, dst)
    except FileExistsError:  # another process finished the same conversion first
        if is_converted_from(dst, src):
            return dst
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_worker.weights.convert_ct2", description=__doc__
    )
    parser.add_argument("src", type=Path, help="CTranslate2 Whisper directory (model.bin ...)")
    parser.add_argument("dst", type=Path, help="new Hugging Face checkpoint directory")
    args = parser.parse_args(argv)
    try:
        print(convert(args.src, args.dst))
    except (OSError, Ct2FormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
