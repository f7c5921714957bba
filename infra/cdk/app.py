"""CDK entry point: `python -m infra.cdk.app` synthesizes the stack of one stage into cdk.out/.

The stage comes from the context (`cdk deploy -c stage=prod`), else from the environment (STAGE), else dev:

    npx aws-cdk@2 deploy --app ".venv/bin/python -m infra.cdk.app" -c stage=prod

Optional context: `alarm_email` (subscribed to the DLQ alarms); `certificate_arn` (an ACM certificate in the stack's
region: adds an HTTPS listener on 443 to the streamer's load balancer, which otherwise serves plain HTTP on 80);
`streamer_domain` (a DNS name the operator points at that load balancer: the host of the stream URLs players get,
https:// when there is a certificate). Deploying builds the streamer's image (streamer/Dockerfile): it needs Docker.

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
        certificate_arn=app.node.try_get_context("certificate_arn") or None,
        streamer_domain=app.node.try_get_context("streamer_domain") or None,
        description=(
            f"Projectionist ({stage}): Chalice app, SQS queues and DLQs, DynamoDB tables, S3 bucket, "
            "streamer on ECS Fargate behind an ALB"
        ),
        tags={"app": "projectionist", "stage": stage},
    )


def main() -> None:
    # Under the CDK CLI, CDK_OUTDIR names the cloud assembly directory; run directly, write ./cdk.out.
    app = cdk.App(outdir=None if os.environ.get("CDK_OUTDIR") else "cdk.out")
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
