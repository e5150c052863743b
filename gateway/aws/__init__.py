"""The AWS-compatible API: SQS (JSON protocol) and SNS (query protocol) on Herald.

See docs/aws.md. `endpoint.router` serves both on `POST /` and `POST /aws`.
"""
