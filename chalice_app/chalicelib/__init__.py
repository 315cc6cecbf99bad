"""The Lambda functions' logic, free of Chalice: each function takes boto3 clients as
arguments, so the tests drive it against moto and local HTTP servers.

- ``dispatch/``: the Dispatcher (an uploaded recording becomes a job on the Audio Queue).
- ``correction/``: the LLM Caller (a timed transcript is corrected and its ``Result`` sent).
- at the top, what both use: ``entrypoints`` (what the Chalice handlers call) and ``aws``
  (clients made once per container). The job table (with its leases), the messages and
  the timed transcript they share with the worker are ``pipeline_core``'s.
"""
