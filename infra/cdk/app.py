"""CDK entry point: `python -m infra.cdk.app` synthesizes the stack of one stage into cdk.out/.

The stage comes from the context (`cdk deploy -c stage=prod`), else from the environment (STAGE), else dev:

    npx aws-cdk@2 deploy --app ".venv/bin/python -m infra.cdk.app" -c stage=prod

Synthesis needs neither AWS credentials nor a network connection to AWS (the stack is environment-agnostic);
Chalice's packaging pip-downloads the Lambda's wheels (requirements.txt) into a cache under .chalice/.
"""

from __future__ import annotations

import os

# Before jsii starts: it prints a banner on every run when Node.js is older than it would like.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import aws_cdk as cdk

from chalicelib.settings import Settings
from infra.cdk.stack import ProjectionistStack

DEFAULT_STAGE = "dev"


def stack_id(stage: str) -> str:
    return Settings(stage=stage).resource_prefix  # projectionist-dev, also the CloudFormation stack name


def build(app: cdk.App, stage: str | None = None) -> ProjectionistStack:
    stage = stage or app.node.try_get_context("stage") or os.environ.get("STAGE") or DEFAULT_STAGE
    # Chalice's packager asks boto3 for a region (only to pick the partition's service principals).
    region = os.environ.get("AWS_REGION") or os.environ.get("CDK_DEFAULT_REGION") or "us-east-1"
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    return ProjectionistStack(
        app,
        stack_id(stage),
        stage=stage,
        alarm_email=app.node.try_get_context("alarm_email"),
        description=f"Projectionist ({stage}): Chalice app, SQS queues and DLQs, DynamoDB tables, S3 bucket",
        tags={"app": "projectionist", "stage": stage},
    )


def main() -> None:
    # Under the CDK CLI, CDK_OUTDIR names the cloud assembly directory; run directly, write ./cdk.out.
    app = cdk.App(outdir=None if os.environ.get("CDK_OUTDIR") else "cdk.out")
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
