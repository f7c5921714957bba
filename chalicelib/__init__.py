"""Projectionist: everything the Lambda functions run."""

__version__ = "0.1.0"
