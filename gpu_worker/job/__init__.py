"""The job row's transitions in the job table: claim it (step 2), then mark it transcribed and
hand it to the LLM Caller, or fail it (step 6)."""
