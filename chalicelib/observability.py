"""Logging and metrics through aws-lambda-powertools.

The Logger's service name must differ from the Chalice app name ("projectionist"): when they are equal,
Chalice's own logger and powertools' both print every line.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

SERVICE = "projectionist-core"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Projectionist", service=SERVICE)
