"""The LLM Caller Lambda: a timed transcript in, corrected chunk by chunk by a model, the
final transcripts and a ``Result`` out."""
