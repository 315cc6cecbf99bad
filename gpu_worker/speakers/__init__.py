"""Who spoke when: the diarization step of the transcription (``diarizer``: the interface and
its configuration; ``resemblyzer_diarizer``: the offline implementation; ``labelling``: the
speakers put on segments and words)."""
