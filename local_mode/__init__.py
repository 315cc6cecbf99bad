"""The whole pipeline on one machine, no AWS account: moto for AWS, handlers in-process."""
