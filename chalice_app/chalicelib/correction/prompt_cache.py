"""Which Bedrock models take a ``cachePoint``, and the shortest prefix each one caches.

Bedrock's explicit prompt caching (Converse: a ``{"cachePoint": {"type": "default"}}`` block)
caches everything before the block, tools and system prompt included, for 5 minutes after its
last use. A prefix shorter than the model's minimum is not cached, and the request still
succeeds; a model without prompt caching would refuse the block, so it is only sent to these.
Minimums as Anthropic's and Bedrock's prompt caching pages list them (checked 2026-11-30):
Sonnet 4.6's 2,048 is Anthropic's figure (the Bedrock note says about 1,024 for Sonnet models:
the larger one is kept, so that nothing here counts on a cache that is not made).
"""

from __future__ import annotations

from typing import Final

from pipeline_core.config import foundation_model_id

# Foundation model id prefix (a profile's geography taken off) -> minimum cacheable tokens.
# Longest prefixes first: the first match decides.
CACHEABLE_MODELS: Final = (
    ("anthropic.claude-sonnet-4-6", 2048),
    ("anthropic.claude-sonnet-4-5", 1024),
    ("anthropic.claude-sonnet-4-2025", 1024),  # Claude Sonnet 4
    ("anthropic.claude-opus-4-6", 4096),
    ("anthropic.claude-opus-4-5", 4096),
    ("anthropic.claude-opus-4-1", 1024),
    ("anthropic.claude-opus-4-2025", 1024),  # Claude Opus 4
    ("anthropic.claude-haiku-4-5", 4096),
    ("anthropic.claude-3-7-sonnet", 1024),
    ("anthropic.claude-3-5-haiku", 2048),
)


def min_cacheable_tokens(model_id: str) -> int | None:
    """The shortest prefix ``model_id`` caches; None: it has no prompt caching."""
    model = foundation_model_id(model_id.rsplit("/", 1)[-1])  # an ARN: its last part
    return next((tokens for prefix, tokens in CACHEABLE_MODELS if model.startswith(prefix)), None)
