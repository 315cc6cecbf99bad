"""The Lambda functions' logic, free of Chalice: each function takes boto3 clients as
arguments, so the tests drive it against moto and local HTTP servers."""
