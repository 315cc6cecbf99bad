"""The GPU worker daemon: polls the Audio Queue, transcribes, hands off to the LLM Queue."""
