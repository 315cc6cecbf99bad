"""Chalice wiring only: each decorator hands its event to a function in chalicelib."""

from __future__ import annotations

from chalice import Chalice

app = Chalice(app_name="transcription-pipeline")
