"""Word error rate per clip, per language and overall, with a stated normaliser."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import jiwer

from gpu_worker.transcription.audio import decode_audio

if TYPE_CHECKING:
    from bench.clips import Clip
    from gpu_worker.transcription.engines import AsrEngine
    from gpu_worker.transcription.transcript import Segment

NORMALISER: Final = (
    "Unicode NFKC; lowercase; hyphens, dashes and the Hebrew maqaf become spaces; Hebrew "
    "niqqud and cantillation (U+0591-U+05C7) removed; every other punctuation character "
    "(Unicode category P) removed; whitespace collapsed. No number or spelling "
    'normalisation ("1961" and "nineteen sixty-one" differ).'
)
# Written without spaces between words: word error rate means nothing, so CER only.
NO_WORD_SPACES: Final = frozenset({"ja", "zh", "th", "lo", "km", "my"})

_TEXT: Final = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.SubstituteRegexes({r"[\u05be\u002d\u2010-\u2015]": " ", r"[\u0591-\u05c7]": ""}),
        jiwer.RemovePunctuation(),  # type: ignore[no-untyped-call]
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
    ]
)


def normalise(text: str) -> str:
    import unicodedata

    return str(_TEXT(unicodedata.normalize("NFKC", text)))


@dataclass(frozen=True)
class ClipScore:
    clip_id: str
    language: str
    source: str
    duration_s: float
    reference: str
    hypothesis: str
    wer: float | None  # None where the language has no spaces between words
    cer: float
    reference_words: int
    transcribe_seconds: float
    rtf: float


@dataclass(frozen=True)
class GroupScore:
    scope: str  # "overall" or a language code
    clips: int
    audio_seconds: float
    reference_words: int
    wer: float | None  # pooled: all errors / all reference words
    cer: float


@dataclass(frozen=True)
class Transcribed:
    clip: Clip
    text: str
    segments: list[Segment]
    seconds: float


def transcribe_clip(engine: AsrEngine, clip: Clip) -> Transcribed:
    audio = decode_audio(clip.path)
    started = time.perf_counter()
    segments = list(engine.transcribe(audio, clip.language))
    seconds = time.perf_counter() - started
    return Transcribed(clip, " ".join(s.text for s in segments).strip(), segments, seconds)


def _errors(reference: str, hypothesis: str, words: bool) -> tuple[int, int]:
    """(edit operations, reference length) on normalised text, words or characters."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if words:
        w = jiwer.process_words(ref, hyp)
        return w.substitutions + w.deletions + w.insertions, len(ref.split())
    c = jiwer.process_characters(ref, hyp)
    return c.substitutions + c.deletions + c.insertions, len(ref)


def score_clip(item: Transcribed) -> ClipScore:
    clip = item.clip
    has_words = clip.language not in NO_WORD_SPACES
    word_errors, words = _errors(clip.reference, item.text, words=True)
    char_errors, chars = _errors(clip.reference, item.text, words=False)
    return ClipScore(
        clip_id=clip.clip_id,
        language=clip.language,
        source=clip.source,
        duration_s=round(clip.duration_s, 3),
        reference=clip.reference,
        hypothesis=item.text,
        wer=round(word_errors / words, 4) if has_words and words else None,
        cer=round(char_errors / chars, 4) if chars else 0.0,
        reference_words=words if has_words else 0,
        transcribe_seconds=round(item.seconds, 3),
        rtf=round(item.seconds / clip.duration_s, 4),
    )


def pooled(scope: str, items: list[tuple[Clip, str]]) -> GroupScore:
    """WER and CER of a group of (clip, hypothesis): errors summed over reference lengths."""
    word_errors = words = char_errors = chars = 0
    for clip, text in items:
        if clip.language not in NO_WORD_SPACES:
            e, n = _errors(clip.reference, text, words=True)
            word_errors, words = word_errors + e, words + n
        e, n = _errors(clip.reference, text, words=False)
        char_errors, chars = char_errors + e, chars + n
    return GroupScore(
        scope=scope,
        clips=len(items),
        audio_seconds=round(sum(c.duration_s for c, _ in items), 1),
        reference_words=words,
        wer=round(word_errors / words, 4) if words else None,
        cer=round(char_errors / chars, 4) if chars else 0.0,
    )


def groups(items: list[tuple[Clip, str]]) -> list[GroupScore]:
    """Overall first, then each language."""
    by_language: dict[str, list[tuple[Clip, str]]] = defaultdict(list)
    for clip, text in items:
        by_language[clip.language].append((clip, text))
    return [pooled("overall", items)] + [
        pooled(language, by_language[language]) for language in sorted(by_language)
    ]
