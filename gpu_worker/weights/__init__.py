"""The Whisper weights the tests, the benchmarks and local mode use: the bundled packages found
on disk and the CTranslate2 -> transformers converter. The daemon never imports this."""
