"""What the Lambda functions, the GPU worker and the on-prem client share.

Message contracts (the system's public API), the S3 key layout, language names,
S3 metadata encoding, the job table, configuration and structured logging. Kept free
of heavy dependencies so that it ships inside the Lambda bundle as it is.
"""
