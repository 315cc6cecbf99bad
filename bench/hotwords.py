"""Whisper primed with a glossary's terms (``hotwords``) or not, per language: WER and CER.

Each clip is transcribed twice by the worker's faster-whisper engine class with the
worker's options: bare, and with the hotwords the worker would pass for a recording of
that language with the glossary (``Glossary.hotwords``). The evaluation clips are not
about the glossary's domain, so this measures the cost of the prompt where its terms are
not spoken (the question for a default: does it make things worse?), not its gain on a
lecture that says them. The same bare run gives the share of words under the LLM Caller's
low-confidence threshold, the words it marks for the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bench.accuracy import normalise, pooled
from bench.clips import by_language
from bench.engines import FASTER_WHISPER, EngineSpec, load
from gpu_worker.transcription.audio import decode_audio
from pipeline_core.config import LOW_CONFIDENCE_PROBABILITY
from pipeline_core.glossary import glossary_named

if TYPE_CHECKING:
    from bench.clips import Clip
    from gpu_worker.transcription.engines import AsrEngine
    from gpu_worker.transcription.transcript import Segment

GLOSSARY: Final = "talmud"
SETTINGS: Final = (
    "gpu_worker's FasterWhisperEngine with the worker's decoding options, each clip bare and "
    f"with the hotwords of the {GLOSSARY!r} glossary in the clip's language (the worker's "
    "WORKER_GLOSSARY_HOTWORDS); WER pooled per language; clips that do not speak the "
    "glossary's terms, so the figure is the prompt's cost where it does not apply"
)


@dataclass(frozen=True)
class LanguageRow:
    language: str
    clips: int
    reference_words: int
    hotwords: str  # what was passed ("" where the glossary has no term in the language)
    bare_wer: float | None  # None where the language has no spaces between words
    primed_wer: float | None
    bare_cer: float
    primed_cer: float
    words: int  # words the bare run recognised, with a probability
    low_confidence_words: int  # of them, under LOW_CONFIDENCE_PROBABILITY
    # Words of the glossary's terms the primed run wrote that the reference does not have:
    # the prompt leaking into the text.
    leaked_terms: int


def _text(segments: list[Segment]) -> str:
    return " ".join(s.text for s in segments).strip()


def _leaked(hotwords: str, hypothesis: str, reference: str) -> int:
    terms = {w for term in hotwords.split(", ") for w in normalise(term).split()}
    said = set(normalise(reference).split())
    return sum(1 for word in normalise(hypothesis).split() if word in terms - said)


def measure(spec: EngineSpec, device: str, clips: list[Clip]) -> list[LanguageRow]:
    """One row per language of ``clips`` that ``spec``'s model can transcribe."""
    assert spec.engine == FASTER_WHISPER
    engine: AsrEngine
    engine, _ = load(spec, device)
    glossary = glossary_named(GLOSSARY)
    assert glossary is not None
    rows = []
    for language, language_clips in by_language(clips, spec.english_only).items():
        hotwords = glossary.hotwords(language)
        bare: list[tuple[Clip, str]] = []
        primed: list[tuple[Clip, str]] = []
        probabilities: list[float] = []
        leaked = 0
        for clip in language_clips:
            audio = decode_audio(clip.path)
            segments = list(engine.transcribe(audio, language))
            bare.append((clip, _text(segments)))
            probabilities += [  # float(): the engine's are numpy's, which JSON refuses
                float(w.probability) for s in segments for w in s.words if w.probability is not None
            ]
            if hotwords:
                text = _text(list(engine.transcribe(audio, language, hotwords=hotwords)))
                leaked += _leaked(hotwords, text, clip.reference)
            else:
                text = bare[-1][1]
            primed.append((clip, text))
        without, with_terms = pooled(language, bare), pooled(language, primed)
        rows.append(
            LanguageRow(
                language=language,
                clips=len(bare),
                reference_words=without.reference_words,
                hotwords=hotwords,
                bare_wer=without.wer,
                primed_wer=with_terms.wer,
                bare_cer=without.cer,
                primed_cer=with_terms.cer,
                words=len(probabilities),
                low_confidence_words=sum(
                    1 for p in probabilities if p < LOW_CONFIDENCE_PROBABILITY
                ),
                leaked_terms=leaked,
            )
        )
    return rows
