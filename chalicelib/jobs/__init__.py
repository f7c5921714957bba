"""The job platform: queue specs, the job envelope, the registry and the SQS consumer."""
