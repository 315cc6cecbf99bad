"""Whisper in PyTorch through Hugging Face transformers: any Whisper checkpoint directory.

The window is cut into chunks of at most 30 s (at quiet moments, see ``audio.quiet_cut``)
that are decoded ``batch_size`` at a time, each on its own: nothing is conditioned on
earlier text. One teacher-forced decoder pass per batch gives each chunk's no-speech
probability and mean log-probability, Whisper's own test for "this is silence".
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from gpu_worker.transcription.audio import SAMPLE_RATE, quiet_cut
from gpu_worker.transcription.engines import check_language
from gpu_worker.transcription.engines.batch_size import ModelSize, choose_batch_size
from gpu_worker.transcription.engines.options import DecodeOptions
from gpu_worker.transcription.transcript import Segment

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import numpy.typing as npt

logger = logging.getLogger(__name__)

CHUNK_SECONDS: Final = 30.0
CUT_SEARCH_SECONDS: Final = 5.0
TIME_PRECISION: Final = 0.02  # seconds per timestamp token step
# Below about -80 dBFS a chunk is digital silence: not worth a decode, and Whisper
# invents "Thank you for watching." there.
SILENCE_RMS: Final = 1e-4
# Generous for speech in any language (Hebrew takes more tokens a word than English), and
# a bound on what a repetition loop can cost: it stops here, not at the 448-token limit.
TOKENS_PER_SECOND: Final = 12
TOKEN_ALLOWANCE: Final = 24

Span = tuple[float | None, float | None, str]


def _rms(samples: npt.NDArray[np.float32]) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


@dataclass(frozen=True)
class Chunk:
    start: int  # sample indices in the window
    end: int


def chunk_bounds(
    audio: npt.NDArray[np.float32],
    chunk_seconds: float = CHUNK_SECONDS,
    search_seconds: float = CUT_SEARCH_SECONDS,
) -> list[Chunk]:
    """Consecutive chunks of at most ``chunk_seconds`` covering ``audio``."""
    size, search = int(chunk_seconds * SAMPLE_RATE), int(search_seconds * SAMPLE_RATE)
    chunks, start = [], 0
    while audio.size - start > size:
        cut = quiet_cut(audio, start + size - search, start + size)
        chunks.append(Chunk(start, cut))
        start = cut
    chunks.append(Chunk(start, audio.size))
    return chunks


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(gzip.compress(raw)) if raw else 0.0


def timed_spans(
    tokens: Sequence[int], timestamp_begin: int, eot: int
) -> list[tuple[float | None, float | None, list[int]]]:
    """Split a generated sequence at its timestamp tokens: (start, end, text tokens)."""
    spans: list[tuple[float | None, float | None, list[int]]] = []
    start: float | None = None
    text: list[int] = []
    for token in tokens:
        if token >= timestamp_begin:
            time = (token - timestamp_begin) * TIME_PRECISION
            if start is not None and text:
                spans.append((start, time, text))
                start, text = None, []
            else:
                start = time
        elif token < eot:
            text.append(token)
    if text:
        spans.append((start, None, text))
    return spans


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class TransformersEngine:
    def __init__(
        self, model_dir: str, device: str = "auto", options: DecodeOptions | None = None
    ) -> None:
        self._model_dir = model_dir
        self._options = options or DecodeOptions()
        self._device = _resolve_device(device)
        self._dtype = torch.float16 if self._device.type == "cuda" else torch.float32
        self._processor = WhisperProcessor.from_pretrained(model_dir, local_files_only=True)
        model = WhisperForConditionalGeneration.from_pretrained(
            model_dir, dtype=self._dtype, local_files_only=True
        )
        module: torch.nn.Module = model  # torch's own (typed) .to and .eval
        module.to(self._device)
        module.eval()
        self._model = model
        if self._options.batch_size is None:
            size = ModelSize(model.config.d_model, model.config.decoder_layers)
            chosen = choose_batch_size(
                size,
                self._device.type,
                activation_bytes=self._dtype.itemsize,
                index=self._device.index or 0,
                copies=self._options.beam_size,  # generate expands each chunk's to its beams
            )
            self._options = dataclasses.replace(self._options, batch_size=chosen)
        config = self._model.generation_config
        self._multilingual = bool(getattr(config, "is_multilingual", False))
        self._eot = int(config.eos_token_id)
        self._sot = int(config.decoder_start_token_id)
        tokenizer = self._processor.tokenizer
        vocab = tokenizer.get_vocab()
        self._timestamp_begin = vocab["<|notimestamps|>"] + 1
        self._max_tokens = int(self._model.config.max_target_positions)
        self._no_speech = vocab.get("<|nospeech|>", vocab.get("<|nocaptions|>"))
        self._transcribe_token = vocab.get("<|transcribe|>")
        self._warned_hotwords = False

    @property
    def model_id(self) -> str:
        return f"transformers:{Path(self._model_dir).name}"

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        language_code: str,
        progress: Callable[[float], None] | None = None,
        hotwords: str | None = None,
    ) -> Iterator[Segment]:
        check_language(self.model_id, self._multilingual, language_code)
        if hotwords and not self._warned_hotwords:
            # Its decoding and its scores of each chunk are built on the bare start sequence;
            # a prompt before it (generate's prompt_ids) would need both reworked.
            logger.warning(
                "the transformers engine takes no prompt; the glossary's terms are not used"
            )
            self._warned_hotwords = True
        return self._segments(audio, language_code, progress)

    def _segments(
        self,
        audio: npt.NDArray[np.float32],
        language_code: str,
        progress: Callable[[float], None] | None,
    ) -> Iterator[Segment]:
        chunks = chunk_bounds(audio)
        size = max(1, self._options.batch_size or 1)
        last_end = 0.0
        try:
            for first in range(0, len(chunks), size):
                batch = chunks[first : first + size]
                decoded = self._decode([audio[c.start : c.end] for c in batch], language_code)
                for chunk, spans in zip(batch, decoded, strict=True):
                    for segment in self._timed(chunk, spans, last_end):
                        last_end = segment.end
                        yield segment
                if progress is not None:
                    progress(batch[-1].end / SAMPLE_RATE)
        finally:
            self._release()

    def _timed(self, chunk: Chunk, spans: list[Span], last_end: float) -> Iterator[Segment]:
        """Chunk-relative spans -> window times: inside the chunk, never going back."""
        offset = chunk.start / SAMPLE_RATE
        length = (chunk.end - chunk.start) / SAMPLE_RATE
        for start, end, text in spans:
            begin = min(max(start if start is not None else 0.0, 0.0), length) + offset
            finish = min(max(end if end is not None else length, 0.0), length) + offset
            begin = max(begin, last_end)
            finish = max(finish, begin)
            last_end = finish
            yield Segment(start=begin, end=finish, text=text)

    def _prompt(self, language_code: str) -> list[int]:
        if not self._multilingual:
            return [self._sot]
        language_id = self._processor.tokenizer.convert_tokens_to_ids(f"<|{language_code}|>")
        return [self._sot, int(language_id), int(self._transcribe_token or 0)]

    def _decode(
        self, pieces: list[npt.NDArray[np.float32]], language_code: str
    ) -> list[list[Span]]:
        """Each piece's text spans; silent pieces are not decoded at all."""
        results: list[list[Span]] = [[] for _ in pieces]
        audible = [i for i, piece in enumerate(pieces) if _rms(piece) > SILENCE_RMS]
        if audible:
            decoded = self._decode_audible([pieces[i] for i in audible], language_code)
            for i, spans in zip(audible, decoded, strict=True):
                results[i] = spans
        return results

    @torch.inference_mode()
    def _decode_audible(
        self, pieces: list[npt.NDArray[np.float32]], language_code: str
    ) -> list[list[Span]]:
        """Decode; a chunk whose text loops is decoded again at the next temperature (as
        Whisper and faster-whisper do), and dropped when every temperature loops."""
        features = self._processor.feature_extractor(
            pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(self._device, self._dtype)
        prompt = self._prompt(language_code)
        longest = max(piece.size for piece in pieces) / SAMPLE_RATE
        budget = min(
            self._max_tokens - len(prompt) - 1,
            int(longest * TOKENS_PER_SECOND) + TOKEN_ALLOWANCE,
        )
        results: list[list[Span]] = [[] for _ in pieces]
        pending = list(range(len(pieces)))
        for temperature in self._options.temperatures:
            decoded = self._attempt(features[pending], language_code, prompt, budget, temperature)
            looping = []
            for index, (spans, verdict) in zip(pending, decoded, strict=True):
                if verdict == "loop":
                    looping.append(index)
                elif verdict == "speech":
                    results[index] = spans
            pending = looping
            if not pending:
                break
        for _ in pending:
            logger.warning("dropped a chunk that loops at every temperature")
        return results

    def _attempt(
        self, features: Any, language_code: str, prompt: list[int], budget: int, temperature: float
    ) -> list[tuple[list[Span], str]]:
        """One decode of a batch: each chunk's spans and verdict (speech, silence or loop)."""
        kwargs: dict[str, Any] = {"return_timestamps": True, "max_new_tokens": budget}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, num_beams=1)
        else:
            kwargs["num_beams"] = self._options.beam_size
        if self._multilingual:  # pinned, never detected
            kwargs.update(language=language_code, task="transcribe")
        # generate() is given the features, not encoder outputs: its batch shrinking as
        # chunks finish needs them. The encoder runs once more for the scores below.
        sequences = self._model.generate(input_features=features, **kwargs)
        encoded = self._model.get_encoder()(features)
        generated = [self._trim(row) for row in sequences.tolist()]
        no_speech, mean_logprob = self._scores(encoded, generated, prompt)
        outcomes: list[tuple[list[Span], str]] = []
        for tokens, p_silent, logprob in zip(generated, no_speech, mean_logprob, strict=True):
            spans = [
                (start, end, text)
                for start, end, ids in timed_spans(tokens, self._timestamp_begin, self._eot)
                if (text := self._processor.tokenizer.decode(ids, skip_special_tokens=True).strip())
            ]
            outcomes.append((spans, self._verdict(spans, p_silent, logprob, len(tokens), budget)))
        return outcomes

    def _verdict(
        self, spans: list[Span], p_silent: float, logprob: float, used: int, budget: int
    ) -> str:
        """Whisper's own tests: probably silent with unlikely text; a loop (text that
        compresses too well, or that ran out of tokens)."""
        options = self._options
        if p_silent > options.no_speech_threshold and logprob < options.log_prob_threshold:
            return "silence"
        text = " ".join(text for _, _, text in spans)
        if used >= budget or compression_ratio(text) > options.compression_ratio_threshold:
            logger.info("repetition loop", extra={"text": text[:200]})
            return "loop"
        return "speech"

    def _trim(self, row: list[int]) -> list[int]:
        """Generated tokens only: no prompt, nothing from the first end-of-text on."""
        if self._eot in row:
            row = row[: row.index(self._eot)]
        return [t for t in row if t >= self._timestamp_begin or t < self._eot]

    def _scores(
        self, encoded: Any, generated: list[list[int]], prompt: list[int]
    ) -> tuple[list[float], list[float]]:
        """Per chunk: P(no speech) at the start token, and the text's mean log-probability."""
        room = self._max_tokens - len(prompt) - 1  # a loop may have used every position
        targets = [[*tokens[:room], self._eot] for tokens in generated]
        width = len(prompt) + max(len(t) for t in targets)
        ids = torch.full((len(targets), width), self._eot, dtype=torch.long)
        for i, tokens in enumerate(targets):
            ids[i, : len(prompt)] = torch.tensor(prompt)
            ids[i, len(prompt) : len(prompt) + len(tokens)] = torch.tensor(tokens)
        hidden = self._model.model(
            encoder_outputs=encoded, decoder_input_ids=ids.to(self._device)
        ).last_hidden_state
        no_speech, means = [], []
        for i, tokens in enumerate(targets):  # one chunk's logits at a time: bounded memory
            used = len(prompt) + len(tokens) - 1
            logprobs = torch.log_softmax(self._model.proj_out(hidden[i, :used]).float(), dim=-1)
            silent = logprobs[0, self._no_speech] if self._no_speech is not None else None
            no_speech.append(0.0 if silent is None else float(silent.exp()))
            picked = logprobs[len(prompt) - 1 :].gather(
                1, ids.new_tensor(tokens)[:, None].to(self._device)
            )
            means.append(float(picked.mean()))
        return no_speech, means

    def _release(self) -> None:
        """Give cached GPU memory back between files (and windows)."""
        if self._device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
