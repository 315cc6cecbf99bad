"""The job's objects in S3: the recording in (step 3), the transcript files out, the timed one
last as the commit mark (step 5)."""
