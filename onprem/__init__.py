"""The on-prem client: cron uploader, results poller, job status and DLQ redrive."""
