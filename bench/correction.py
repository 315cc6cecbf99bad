"""The effect of LLM correction: WER before and after, through the LLM Caller's own code."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.accuracy import Transcribed, pooled
from bench.paths import ensure_chalicelib
from pipeline_core.config import default_bedrock_model_id
from pipeline_core.timed_text import parse, render_plain, render_segments

if TYPE_CHECKING:
    from bench.clips import Clip
    from chalicelib.correction.correctors import Corrector
    from chalicelib.correction.transcript import ChunkResult


@dataclass(frozen=True)
class ClipCorrection:
    clip_id: str
    language: str
    corrected: str
    wer_before: float | None
    wer_after: float | None


@dataclass(frozen=True)
class LanguageCorrection:
    language: str
    clips: int
    wer_before: float | None
    wer_after: float | None


@dataclass(frozen=True)
class CorrectionEffect:
    status: str  # "measured", "not measured" (no model reachable) or "failed"
    corrector: str | None
    engine: str | None = None
    wer_before: float | None = None
    wer_after: float | None = None
    cer_before: float | None = None
    cer_after: float | None = None
    clips: tuple[ClipCorrection, ...] = ()
    languages: tuple[LanguageCorrection, ...] = ()
    reason: str | None = None


class MemoryCheckpoints:
    def __init__(self) -> None:
        self._saved: dict[str, ChunkResult] = {}

    def load(self, fingerprint: str) -> ChunkResult | None:
        return self._saved.get(fingerprint)

    def save(self, fingerprint: str, result: ChunkResult) -> None:
        self._saved[fingerprint] = result


def corrected_text(corrector: Corrector, item: Transcribed, details: str = "") -> str:
    """What the LLM Caller would write as the final plain text for this transcript."""
    ensure_chalicelib()
    from chalicelib.correction.prompt import PromptContext
    from chalicelib.correction.transcript import CorrectionParams, Deadline, correct_transcript

    transcript = parse(render_segments(item.segments))
    report = correct_transcript(
        transcript,
        corrector=corrector,
        context=PromptContext(item.clip.language, details, ""),
        checkpoints=MemoryCheckpoints(),
        deadline=Deadline(None),
        params=CorrectionParams(chunk_max_chars=3000, calls_in_flight=1, min_similarity=0.5),
    )
    return render_plain(transcript, report.texts)


def measure(corrector: Corrector | None, engine: str, items: list[Transcribed]) -> CorrectionEffect:
    """WER of ``items`` before and after ``corrector``, overall and per language; "not
    measured" without one (never a made-up number)."""
    if corrector is None:
        return CorrectionEffect(
            status="not measured",
            corrector=None,
            reason="no model reachable: pass --corrector bedrock|openai to measure it",
        )
    try:
        after = [(item, corrected_text(corrector, item)) for item in items]
    except Exception as exc:  # a model that cannot be reached: say so, invent nothing
        return CorrectionEffect(
            status="failed", corrector=corrector.identity, engine=engine, reason=repr(exc)
        )
    before_all = pooled("overall", [(i.clip, i.text) for i in items])
    after_all = pooled("overall", [(i.clip, text) for i, text in after])
    clips = tuple(
        ClipCorrection(
            clip_id=item.clip.clip_id,
            language=item.clip.language,
            corrected=text,
            wer_before=pooled(item.clip.clip_id, [(item.clip, item.text)]).wer,
            wer_after=pooled(item.clip.clip_id, [(item.clip, text)]).wer,
        )
        for item, text in after
    )
    by_language: dict[str, list[tuple[Clip, str, str]]] = defaultdict(list)
    for item, text in after:
        by_language[item.clip.language].append((item.clip, item.text, text))
    languages = tuple(
        LanguageCorrection(
            language=language,
            clips=len(rows),
            wer_before=pooled(language, [(clip, said) for clip, said, _ in rows]).wer,
            wer_after=pooled(language, [(clip, text) for clip, _, text in rows]).wer,
        )
        for language, rows in sorted(by_language.items())
    )
    return CorrectionEffect(
        status="measured",
        languages=languages,
        corrector=corrector.identity,
        engine=engine,
        wer_before=before_all.wer,
        wer_after=after_all.wer,
        cer_before=before_all.cer,
        cer_after=after_all.cer,
        clips=clips,
    )


def make_corrector(
    kind: str, *, llm_url: str | None, llm_model: str, bedrock_model: str | None
) -> Corrector | None:
    """The corrector named on the command line, built as the LLM Caller builds it."""
    if kind == "none":
        return None
    ensure_chalicelib()
    from chalicelib.correction.correctors import BedrockCorrector, OpenAICompatibleCorrector

    if kind == "openai":
        if llm_url is None:
            raise ValueError("--corrector openai needs --llm-url")
        return OpenAICompatibleCorrector(llm_url, llm_model, 4096)
    import boto3

    client = boto3.client("bedrock-runtime")
    model = bedrock_model or default_bedrock_model_id(client.meta.region_name)
    return BedrockCorrector(client, model, 4096)
