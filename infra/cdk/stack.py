"""One CloudFormation stack per stage: queues, DLQs, tables, bucket, alarms, the Lambdas' role, the Chalice app,
and the streamer (ECS Fargate behind an Application Load Balancer) with the secrets it shares with the app.

Everything is derived from the same sources the app and the local runtime read: the queue specs
(`chalicelib.jobs.queues.QUEUES`), the PynamoDB models (`all_models()` / `table_schema()`) and the naming
rule in `Settings.resource_name`. Nothing here repeats a number or a name from those. The streamer's sizing per
stage is the one table of its own (`STREAMER_CONFIGS`).

Chalice packages `app.py` in-process (it imports it), so the queue names in the generated SQS events come
from the environment's STAGE at that moment; the stack sets it, and checks every generated event against
the spec before it points the event at the CDK queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from chalice.cdk import Chalice
from chalice.utils import to_cfn_resource_name
from constructs import Construct

from chalicelib.jobs.queues import QUEUES, QueueSpec, get_queue
from chalicelib.models import all_models
from chalicelib.models.base import table_schema
from chalicelib.settings import Settings, reset_settings

ROOT = Path(__file__).resolve().parents[2]
PROD_STAGES = frozenset({"prod"})

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}

_QUEUE_ACTIONS = [
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
]
# What the functions do on every table and its indexes (CDK's grant_read_write_data, in one statement).
_TABLE_ACTIONS = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:UpdateItem",
]
# The function app.py registers to enqueue the pending one-time data migrations; the stack runs it after deploys.
MIGRATIONS_FUNCTION = "run_migrations"

# The construct id of the singleton Lambda behind every AwsCustomResource of a stack (CDK names it after the
# "AWS" purpose and the UUID, dashes dropped); its logical id starts with this.
_AWS_CUSTOM_RESOURCE_PROVIDER_ID = "AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", "")

# What the admin API's DLQ redrive needs on a DLQ on top of the above (SQS StartMessageMoveTask).
_MESSAGE_MOVE_ACTIONS = ["sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks", "sqs:CancelMessageMoveTask"]


# -- the streamer ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamerConfig:
    """The streamer service's size on Fargate, per stage."""

    cpu: int  # CPU units (1024 = 1 vCPU); with memory_mib, one of Fargate's supported pairs
    memory_mib: int  # the task's memory, and the container's hard limit
    desired_count: int
    ephemeral_storage_gib: int | None  # the downloads live there; None is Fargate's default 20 GiB, else 21..200
    log_retention: logs.RetentionDays
    spot: bool  # Fargate Spot: ~70% cheaper, and AWS may stop the task (at two minutes' notice)


# One task in every stage: a stream's torrent lives in the memory of the task that started it (POST .../start, then
# /stream/{token} and .../status must reach that same task), which a second task behind the ALB would break until
# the streams are routed by token. The worker side would scale; the stream side does not yet.
STREAMER_CONFIGS: dict[str, StreamerConfig] = {
    # dev: half a vCPU, 1 GiB, 20 GiB of downloads, on Spot (an interruption is a short outage of a dev stream)
    "dev": StreamerConfig(
        cpu=512,
        memory_mib=1024,
        desired_count=1,
        ephemeral_storage_gib=None,
        log_retention=logs.RetentionDays.ONE_WEEK,
        spot=True,
    ),
    # prod: one vCPU, 2 GiB (libtorrent's disk cache and several streams at once), 100 GiB of downloads, on-demand
    "prod": StreamerConfig(
        cpu=1024,
        memory_mib=2048,
        desired_count=1,
        ephemeral_storage_gib=100,
        log_retention=logs.RetentionDays.ONE_MONTH,
        spot=False,
    ),
}


def streamer_disk_quota_bytes(config: StreamerConfig) -> int:
    """STREAMER_DISK_QUOTA_BYTES: the task's ephemeral storage, less the headroom (16 GiB of Fargate's default 20)."""
    storage = config.ephemeral_storage_gib or FARGATE_DEFAULT_STORAGE_GIB
    return (storage - STREAMER_STORAGE_HEADROOM_GIB) * 1024**3


def streamer_config(stage: str) -> StreamerConfig:
    """The prod sizing for production stages, dev's for every other stage."""
    return STREAMER_CONFIGS["prod" if stage in PROD_STAGES else "dev"]


STREAMER_DOCKERFILE = "streamer/Dockerfile"  # relative to the build context, the repository root
STREAMER_HTTP_PORT = 8003
STREAMER_TORRENT_PORT = 6881
STREAMER_HEALTH_PATH = "/health"
STREAMER_DOWNLOAD_DIR = "/data"  # the Dockerfile's VOLUME and STREAMER_DOWNLOAD_DIR
FARGATE_DEFAULT_STORAGE_GIB = 20
# What the task's storage holds besides downloads: the image's layers, resume data, logs. The rest is the quota.
STREAMER_STORAGE_HEADROOM_GIB = 4
# The ALB's idle timeout (its maximum): a paused player keeps its stream's connection open without reading.
STREAMER_IDLE_TIMEOUT = 4000
# Heavy folders that are never part of the image's build context, whatever .dockerignore (an allow-list, read by
# CDK too) says: the asset staging copies the context into cdk.out at every synthesis.
STREAMER_CONTEXT_EXCLUDE = [".git", ".venv", ".data", "cdk.out", "chalice.out", "node_modules", "tests"]
# The container's health probe (ECS ignores the image's HEALTHCHECK); slim has no curl. Non-2xx raises.
_HEALTH_PROBE = (
    "import urllib.request; "
    f"urllib.request.urlopen('http://127.0.0.1:{STREAMER_HTTP_PORT}{STREAMER_HEALTH_PATH}', timeout=4)"
)
# The secrets the API and the streamer share, by environment variable: Secrets Manager generates them.
SHARED_SECRETS = ("STREAM_SIGNING_KEY", "SECRETS_KEY")
# The secrets only the API's functions get: the HS256 key of access tokens (the streamer never sees it).
API_SECRETS = ("JWT_SECRET",)
# SECRETS_KEY is a Fernet key (32 bytes, urlsafe base64). Secrets Manager cannot append the one "=" of padding,
# so it generates the 43 base64url characters before it: the app pads the value (`key + "=" * (-len(key) % 4)`).
_FERNET_KEY_CHARACTERS = 43
_NOT_BASE64URL = "".join(c for c in string.punctuation if c not in "-_")


def _chalice_stage_environment(source_dir: Path, stage: str) -> dict[str, str]:
    """The environment `.chalice/config.json` gives the Lambdas of a stage (LOG_LEVEL, ...), for the streamer."""
    path = source_dir / ".chalice" / "config.json"
    if not path.is_file():
        return {}
    stages = json.loads(path.read_text()).get("stages", {})
    variables: dict[str, str] = stages.get(stage, {}).get("environment_variables", {})
    return dict(variables)


def code_version(source_dir: Path) -> str:
    """A sha256 over the app's code: app.py and every file under chalicelib/ (by sorted path, no __pycache__).

    Each file's path relative to source_dir goes into the digest with its bytes, so that renaming, adding or
    removing a file changes it too.
    """
    root = source_dir.resolve()
    package = root / "chalicelib"
    files = [root / "app.py"]
    if package.is_dir():
        files += sorted(
            (p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.relative_to(root).parts),
            key=lambda p: p.relative_to(root).as_posix(),
        )
    digest = hashlib.sha256()
    for path in files:
        content = path.read_bytes()
        name = path.relative_to(root).as_posix().encode()
        digest.update(b"%d:%s\0%d:" % (len(name), name, len(content)))
        digest.update(content)
    return digest.hexdigest()


class _ChaliceStageScope(Construct):
    """The scope of the Chalice construct, which takes its Chalice stage name from `scope.to_string()`.

    Without this, the Chalice stage would be the stack's construct path (e.g. `projectionist-prod`), which is
    not a stage of `.chalice/config.json`, and that file's per-stage settings (LOG_LEVEL, ...) would be lost.
    """

    def __init__(self, scope: Construct, construct_id: str, *, chalice_stage: str) -> None:
        super().__init__(scope, construct_id)
        self._chalice_stage = chalice_stage

    def to_string(self) -> str:
        return self._chalice_stage


class ProjectionistStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        alarm_email: str | None = None,
        certificate_arn: str | None = None,
        streamer_domain: str | None = None,
        source_dir: Path = ROOT,
        **kwargs: Any,
    ) -> None:
        """certificate_arn (an ACM certificate in the stack's region) adds an HTTPS listener on 443 to the streamer's
        load balancer; streamer_domain (a name the operator points at the load balancer) becomes the host of the
        public stream URL players get, over HTTPS when there is a certificate."""
        super().__init__(scope, construct_id, **kwargs)
        source_dir = source_dir.resolve()
        self.stage = stage
        self.settings = Settings(stage=stage)
        self.is_prod = stage in PROD_STAGES
        self.retention = cdk.RemovalPolicy.RETAIN if self.is_prod else cdk.RemovalPolicy.DESTROY

        self.queues: dict[str, sqs.Queue] = {}
        self.dlqs: dict[str, sqs.Queue] = {}
        for spec in QUEUES:
            self.dlqs[spec.name], self.queues[spec.name] = self._queue(spec)

        self.tables: dict[str, dynamodb.Table] = {
            table_schema(model)["logical_name"]: self._table(model) for model in all_models()
        }

        self.bucket = s3.Bucket(
            self,
            "Media",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=False,
            removal_policy=self.retention,
            auto_delete_objects=not self.is_prod,
        )
        if not self.is_prod:
            self._drop_redundant_depends_on("Custom::S3AutoDeleteObjectsCustomResourceProvider", "Handler")

        self.alarm_topic = sns.Topic(self, "Alarms", topic_name=self.settings.resource_name("alarms"), enforce_ssl=True)
        if alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self.alarms = {spec.name: self._dlq_alarm(spec) for spec in QUEUES}

        self.secrets = self._shared_secrets()
        self.api_secrets = self._api_secrets()
        # Secrets at rest (feeds' API keys, ...) are envelope-encrypted under this key (chalicelib/secrets.py).
        self.secrets_key = kms.Key(
            self,
            "SecretsAtRestKey",
            description=f"Projectionist {self.stage}: envelope encryption of stored secrets",
            enable_key_rotation=True,
            removal_policy=self.retention,
        )
        self.streamer_config = streamer_config(stage)
        self._streamer(source_dir, certificate_arn=certificate_arn)
        self.streamer_url = f"http://{self.load_balancer.load_balancer_dns_name}"
        if streamer_domain:
            self.streamer_public_url = f"{'https' if certificate_arn else 'http'}://{streamer_domain}"
        else:
            self.streamer_public_url = self.streamer_url

        self.role = self._lambda_role()
        self.chalice = self._chalice_app(source_dir)
        self.functions = self._wire_consumers()
        self.migrations = self._run_migrations_after_deploy(source_dir)

        cdk.CfnOutput(self, "BucketName", value=self.bucket.bucket_name)
        cdk.CfnOutput(self, "LambdaRoleArn", value=self.role.role_arn)
        cdk.CfnOutput(self, "StreamerUrl", value=self.streamer_url)
        cdk.CfnOutput(self, "StreamerPublicUrl", value=self.streamer_public_url)

    # -- queues -------------------------------------------------------------------------------------------

    def _queue(self, spec: QueueSpec) -> tuple[sqs.Queue, sqs.Queue]:
        ident = to_cfn_resource_name(spec.name)
        fifo_props: dict[str, Any] = {"fifo": True, "content_based_deduplication": False} if spec.fifo else {}
        dlq = sqs.Queue(
            self,
            f"{ident}Dlq",
            queue_name=spec.dlq_name(self.settings),
            retention_period=cdk.Duration.seconds(spec.dlq_retention_seconds),
            visibility_timeout=cdk.Duration.seconds(spec.visibility_timeout),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            removal_policy=self.retention,
            **fifo_props,
        )
        queue = sqs.Queue(
            self,
            f"{ident}Queue",
            queue_name=spec.queue_name(self.settings),
            retention_period=cdk.Duration.seconds(spec.retention_seconds),
            visibility_timeout=cdk.Duration.seconds(spec.visibility_timeout),
            dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=spec.max_receive_count),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            removal_policy=self.retention,
            **fifo_props,
        )
        return dlq, queue

    def _dlq_alarm(self, spec: QueueSpec) -> cloudwatch.Alarm:
        dlq = self.dlqs[spec.name]
        alarm = cloudwatch.Alarm(
            self,
            f"{to_cfn_resource_name(spec.name)}DlqNotEmpty",
            alarm_name=self.settings.resource_name(f"{spec.name}-dlq-not-empty"),
            alarm_description=f"Messages in {spec.dlq_name(self.settings)}: jobs of queue {spec.name!r} gave up",
            metric=dlq.metric_approximate_number_of_messages_visible(
                period=cdk.Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic))
        return alarm

    def _drop_redundant_depends_on(self, provider_id: str, child_id: str) -> None:
        """CDK's provider functions (S3 auto-delete, AwsCustomResource) GetAtt their role and DependsOn it (W3005).

        The GetAtt already orders the two, so the explicit DependsOn goes; if CDK renames the construct, the
        warning comes back and the infra test's cfn-lint check says so.
        """
        provider = self.node.try_find_child(provider_id)
        handler = provider.node.try_find_child(child_id) if provider is not None else None
        if isinstance(handler, cdk.CfnResource):
            handler.add_deletion_override("DependsOn")

    # -- tables -------------------------------------------------------------------------------------------

    def _table(self, model: Any) -> dynamodb.Table:
        schema = table_schema(model)
        types = {d["AttributeName"]: d["AttributeType"] for d in schema["attribute_definitions"]}

        def keys(key_schema: list[dict[str, str]]) -> tuple[dynamodb.Attribute, dynamodb.Attribute | None]:
            by_type = {
                key["KeyType"]: dynamodb.Attribute(
                    name=key["AttributeName"], type=_ATTRIBUTE_TYPES[types[key["AttributeName"]]]
                )
                for key in key_schema
            }
            return by_type["HASH"], by_type.get("RANGE")

        partition_key, sort_key = keys(schema["key_schema"])
        table = dynamodb.Table(
            self,
            f"{to_cfn_resource_name(schema['logical_name'])}Table",
            table_name=self.settings.resource_name(schema["logical_name"]),
            partition_key=partition_key,
            sort_key=sort_key,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute=schema["ttl_attribute"],
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=self.is_prod
            ),
            deletion_protection=self.is_prod,
            removal_policy=self.retention,
        )
        for gsi in schema["global_secondary_indexes"]:
            projection = gsi["projection"]
            gsi_partition_key, gsi_sort_key = keys(gsi["key_schema"])
            table.add_global_secondary_index(
                index_name=gsi["index_name"],
                partition_key=gsi_partition_key,
                sort_key=gsi_sort_key,
                projection_type=dynamodb.ProjectionType[projection["ProjectionType"]],
                non_key_attributes=projection.get("NonKeyAttributes"),
            )
        return table

    # -- the streamer and the secrets it shares with the app --------------------------------------------------

    def _shared_secrets(self) -> dict[str, secretsmanager.Secret]:
        """One generated secret per shared key; the template holds no value, only references to them.

        They outlive a prod stack, as the tables do: SECRETS_KEY decrypts what those hold. (So do not change the
        generation settings of a deployed one: CloudFormation would replace the secret, and with it the key.)
        """
        signing_key = secretsmanager.Secret(
            self,
            "StreamSigningKey",
            description=f"Projectionist {self.stage}: STREAM_SIGNING_KEY, the HMAC key of stream grants",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False
            ),
            removal_policy=self.retention,
        )
        secrets_key = secretsmanager.Secret(
            self,
            "SecretsKey",
            description=(
                f"Projectionist {self.stage}: SECRETS_KEY, the Fernet key of stored secrets, without its '=' padding"
            ),
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=_FERNET_KEY_CHARACTERS,
                exclude_characters=_NOT_BASE64URL,
                include_space=False,
                require_each_included_type=False,
            ),
            removal_policy=self.retention,
        )
        return {"STREAM_SIGNING_KEY": signing_key, "SECRETS_KEY": secrets_key}

    def _api_secrets(self) -> dict[str, secretsmanager.Secret]:
        """Generated like the shared ones, for the functions only. Replacing it signs everyone out, nothing more."""
        jwt_secret = secretsmanager.Secret(
            self,
            "JwtSecret",
            description=f"Projectionist {self.stage}: JWT_SECRET, the HS256 key of access tokens",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False
            ),
            removal_policy=self.retention,
        )
        return {"JWT_SECRET": jwt_secret}

    def _streamer(self, source_dir: Path, *, certificate_arn: str | None) -> None:
        """The streamer on Fargate: a public-subnet VPC (no NAT gateway), the cluster, the service and its ALB.

        The task gets a public IP: it reaches ECR, SQS, DynamoDB and S3 without a NAT gateway, and BitTorrent peers
        reach it on the torrent port. Its HTTP port is open to the load balancer only.
        """
        config = self.streamer_config
        self.vpc = ec2.Vpc(
            self,
            "StreamerVpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=2,  # the load balancer needs two
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)],
            restrict_default_security_group=False,  # nothing uses it; restricting it takes a custom resource
        )
        self.cluster = ecs.Cluster(
            self,
            "StreamerCluster",
            vpc=self.vpc,
            cluster_name=self.settings.resource_name("streamer"),
        )

        task = ecs.FargateTaskDefinition(
            self,
            "StreamerTask",
            cpu=config.cpu,
            memory_limit_mib=config.memory_mib,
            ephemeral_storage_gib=config.ephemeral_storage_gib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
            volumes=[ecs.Volume(name="downloads")],
        )
        self.streamer_log_group = logs.LogGroup(
            self, "StreamerLogs", retention=config.log_retention, removal_policy=self.retention
        )
        image = ecs.ContainerImage.from_asset(
            str(source_dir),
            file=STREAMER_DOCKERFILE,
            exclude=STREAMER_CONTEXT_EXCLUDE,
            ignore_mode=cdk.IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        environment = {
            **{k: v for k, v in _chalice_stage_environment(source_dir, self.stage).items() if k == "LOG_LEVEL"},
            "STAGE": self.stage,
            "BUCKET_NAME": self.bucket.bucket_name,
            "AWS_REGION": cdk.Aws.REGION,
            "STREAMER_DOWNLOAD_DIR": STREAMER_DOWNLOAD_DIR,
            "STREAMER_DISK_QUOTA_BYTES": str(streamer_disk_quota_bytes(config)),
            # No home router in a VPC: the task has a public IP and its torrent port is open, so port mapping
            # (UPnP, NAT-PMP) and local peer discovery (LSD multicast) have nothing to talk to.
            "TORRENT_UPNP": "false",
            "TORRENT_NATPMP": "false",
            "TORRENT_LSD": "false",
        }
        container = task.add_container(
            "streamer",
            image=image,  # its CMD is `python -m streamer`, as its USER (not root)
            memory_limit_mib=config.memory_mib,
            essential=True,
            environment=environment,
            secrets={name: ecs.Secret.from_secrets_manager(secret) for name, secret in self.secrets.items()},
            port_mappings=[
                ecs.PortMapping(container_port=STREAMER_HTTP_PORT, protocol=ecs.Protocol.TCP, name="http"),
                ecs.PortMapping(container_port=STREAMER_TORRENT_PORT, protocol=ecs.Protocol.TCP, name="torrent-tcp"),
                ecs.PortMapping(container_port=STREAMER_TORRENT_PORT, protocol=ecs.Protocol.UDP, name="torrent-udp"),
            ],
            health_check=ecs.HealthCheck(
                command=["CMD", "python", "-c", _HEALTH_PROBE],
                interval=cdk.Duration.seconds(30),
                timeout=cdk.Duration.seconds(5),
                retries=3,
                start_period=cdk.Duration.seconds(60),
            ),
            logging=ecs.LogDrivers.aws_logs(stream_prefix="streamer", log_group=self.streamer_log_group),
            stop_timeout=cdk.Duration.seconds(60),  # SIGTERM, then this long to finish the jobs in flight
        )
        container.add_mount_points(
            ecs.MountPoint(source_volume="downloads", container_path=STREAMER_DOWNLOAD_DIR, read_only=False)
        )
        self._grant_streamer(task.task_role)

        service_security_group = ec2.SecurityGroup(
            self, "StreamerServiceSg", vpc=self.vpc, description="Projectionist streamer tasks", allow_all_outbound=True
        )
        # Peers reach the torrent port from anywhere (TCP, and UDP for uTP and the DHT).
        for port in (ec2.Port.tcp(STREAMER_TORRENT_PORT), ec2.Port.udp(STREAMER_TORRENT_PORT)):
            service_security_group.add_ingress_rule(ec2.Peer.any_ipv4(), port, "BitTorrent peers")
        capacity = [ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", weight=1)] if config.spot else None
        self.streamer_service = ecs.FargateService(
            self,
            "StreamerService",
            cluster=self.cluster,
            task_definition=task,
            desired_count=config.desired_count,
            assign_public_ip=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[service_security_group],
            capacity_provider_strategies=capacity,
            # A deploy starts the new task before it stops the old one, and rolls back if it never gets healthy.
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=cdk.Duration.seconds(120),
        )
        if config.spot:
            # The service is refused unless FARGATE_SPOT is associated with the cluster by then. The cluster's own
            # `enable_fargate_capacity_providers` creates that association too late (in an aspect, at synthesis) for
            # the service to depend on it, so the stack associates the providers itself.
            associations = ecs.CfnClusterCapacityProviderAssociations(
                self,
                "StreamerCapacityProviders",
                cluster=self.cluster.cluster_name,
                capacity_providers=["FARGATE", "FARGATE_SPOT"],
                default_capacity_provider_strategy=[],
            )
            self.streamer_service.node.add_dependency(associations)

        # The load balancer: HTTP on 80 from anywhere (and HTTPS on 443 given a certificate), to the tasks' 8003.
        lb_security_group = ec2.SecurityGroup(
            self,
            "StreamerLbSg",
            vpc=self.vpc,
            description="Projectionist streamer load balancer",
            allow_all_outbound=False,
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "StreamerLb",
            vpc=self.vpc,
            internet_facing=True,
            security_group=lb_security_group,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            idle_timeout=cdk.Duration.seconds(STREAMER_IDLE_TIMEOUT),
            drop_invalid_header_fields=True,
        )
        self.streamer_targets = elbv2.ApplicationTargetGroup(
            self,
            "StreamerTargets",
            vpc=self.vpc,
            port=STREAMER_HTTP_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            health_check=elbv2.HealthCheck(
                path=STREAMER_HEALTH_PATH,
                healthy_http_codes="200",
                interval=cdk.Duration.seconds(30),
                timeout=cdk.Duration.seconds(5),
                healthy_threshold_count=2,
                unhealthy_threshold_count=3,
            ),
            # A stream cut by a deploy resumes with a Range request on the new task: no need to wait long.
            deregistration_delay=cdk.Duration.seconds(30),
        )
        # Registers the service's security group as a target: the load balancer may reach it on 8003, only.
        self.streamer_service.attach_to_application_target_group(self.streamer_targets)
        self.load_balancer.add_listener(
            "Http",
            port=80,
            protocol=elbv2.ApplicationProtocol.HTTP,
            open=True,
            default_target_groups=[self.streamer_targets],
        )
        if certificate_arn:
            self.load_balancer.add_listener(
                "Https",
                port=443,
                protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[elbv2.ListenerCertificate.from_arn(certificate_arn)],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                open=True,
                default_target_groups=[self.streamer_targets],
            )

    def _grant_streamer(self, role: iam.IRole) -> None:
        """The task role: the tables and the bucket, read and write; the torrent queue, consumed and sent to (the
        VPN gate and retries put jobs back on it); its DLQ, sent to (a job that gives up is parked there)."""
        for table in self.tables.values():
            table.grant_read_write_data(role)
        self.bucket.grant_read_write(role)
        torrent = get_queue("torrent")
        if torrent.consumer != "streamer":
            raise RuntimeError(f"the streamer consumes the torrent queue, whose spec says {torrent.consumer!r}")
        self.queues[torrent.name].grant_consume_messages(role)
        self.queues[torrent.name].grant_send_messages(role)
        self.dlqs[torrent.name].grant_send_messages(role)

    # -- the Lambdas ----------------------------------------------------------------------------------------

    def _lambda_role(self) -> iam.Role:
        role = iam.Role(
            self,
            "LambdaRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Projectionist {self.stage} Lambda functions (Chalice)",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaBasicExecutionRole")
            ],
        )
        # One statement for every table and its indexes, and one for every queue and DLQ, rather than CDK's
        # per-table and per-queue grants, which would overflow the inline policy's size limit into an extra
        # managed policy (that the consumers would then have to wait for too).
        tables = [table.table_arn for table in self.tables.values()]
        role.add_to_policy(
            iam.PolicyStatement(actions=_TABLE_ACTIONS, resources=[*tables, *(f"{arn}/index/*" for arn in tables)])
        )
        # Jobs are enqueued and consumed; stats read queue attributes; a job may be parked on its DLQ directly.
        every_queue = [q.queue_arn for q in (*self.queues.values(), *self.dlqs.values())]
        role.add_to_policy(iam.PolicyStatement(actions=_QUEUE_ACTIONS, resources=every_queue))
        role.add_to_policy(
            iam.PolicyStatement(actions=_MESSAGE_MOVE_ACTIONS, resources=[q.queue_arn for q in self.dlqs.values()])
        )
        self.bucket.grant_read_write(role)
        self.secrets_key.grant(role, "kms:GenerateDataKey", "kms:Decrypt")
        return role

    def _chalice_app(self, source_dir: Path) -> Chalice:
        # Chalice imports the app as the module `app` (its project dir first on sys.path only if absent). Put
        # the project first, so that run from infra/cdk/ it is not this package's app.py that gets imported.
        loaded = sys.modules.get("app")
        if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != source_dir / "app.py":
            raise RuntimeError(f"a module 'app' other than {source_dir / 'app.py'} is already imported: {loaded}")
        if sys.path[:1] != [str(source_dir)]:
            sys.path.insert(0, str(source_dir))
        # app.py reads the stage from the environment when Chalice imports it (queue names of the SQS events).
        os.environ["STAGE"] = self.stage
        reset_settings()
        environment = {
            "STAGE": self.stage,
            "BUCKET_NAME": self.bucket.bucket_name,
            "STREAMER_URL": self.streamer_url,
            "STREAMER_PUBLIC_URL": self.streamer_public_url,
            "SECRETS_KMS_KEY_ID": self.secrets_key.key_arn,
            # CloudFormation dynamic references ({{resolve:secretsmanager:...}}), resolved at deploy time: the
            # template holds none of the values (a rotated value reaches the functions at the next deploy).
            **{
                name: secret.secret_value.unsafe_unwrap()
                for name, secret in {**self.secrets, **self.api_secrets}.items()
            },
        }
        stage_config: dict[str, Any] = {
            "environment_variables": environment,
            "manage_iam_role": False,
            "iam_role_arn": self.role.role_arn,
            "autogen_policy": False,
        }
        # Chalice takes the stage name from its scope; see _ChaliceStageScope.
        scope = _ChaliceStageScope(self, "Chalice", chalice_stage=self.stage)
        return Chalice(scope, "App", source_dir=str(source_dir), stage_config=stage_config)

    def _sam_template(self) -> dict[str, Any]:
        # The SAM template as Chalice generated it, before CDK overrides (CfnInclude's L1 objects cannot be
        # read back through jsii: their SAM event properties fail to serialize).
        path = Path(self.chalice._sam_package_dir) / "sam.json"
        result: dict[str, Any] = json.loads(path.read_text())
        return result

    def _wire_consumers(self) -> dict[str, cdk.CfnResource]:
        """Per consumer: the spec's timeout, ReportBatchItemFailures, and the CDK queue as its event source.

        Chalice applies a stage_config's `lambda_functions` only from `.chalice/config.json`, not from the
        parameters the CDK construct passes (those are looked up flat and apply to every function), so the
        per-function timeout is set here, on the generated function, from the spec.
        """
        resources = self._sam_template()["Resources"]
        # The event source mapping SAM makes checks, when it is created, that the role may receive from the
        # queue: the function (which the mapping refers to) waits for the role's policy. (Not for the whole role:
        # its GetAtt already orders that, and cfn-lint would flag the redundant DependsOn.)
        policy = self.role.node.find_child("DefaultPolicy")
        functions: dict[str, cdk.CfnResource] = {}
        for spec in QUEUES:
            if spec.consumer != "lambda":
                continue
            logical_id = to_cfn_resource_name(spec.consumer_name)
            generated = resources.get(logical_id)
            if generated is None:
                raise RuntimeError(f"app.py registers no function {spec.consumer_name!r} for queue {spec.name!r}")
            events = {k: v for k, v in generated["Properties"].get("Events", {}).items() if v["Type"] == "SQS"}
            if len(events) != 1:
                raise RuntimeError(f"{spec.consumer_name}: expected one SQS event, found {sorted(events)}")
            ((event_name, event),) = events.items()
            queue_ref = json.dumps(event["Properties"]["Queue"])
            if not queue_ref.endswith(f':{spec.queue_name(self.settings)}"}}'):
                raise RuntimeError(
                    f"{spec.consumer_name}: Chalice generated an event on {queue_ref}, not on "
                    f"{spec.queue_name(self.settings)} (was app.py imported for another stage?)"
                )
            function = self.chalice.get_resource(logical_id)
            function.add_property_override("Timeout", spec.handler_timeout)
            prefix = f"Events.{event_name}.Properties"
            function.add_property_override(f"{prefix}.Queue", self.queues[spec.name].queue_arn)
            function.add_property_override(f"{prefix}.FunctionResponseTypes", ["ReportBatchItemFailures"])
            function.node.add_dependency(policy)
            functions[spec.consumer_name] = function
        return functions

    def _run_migrations_after_deploy(self, source_dir: Path) -> cr.AwsCustomResource:
        """Invoke app.py's run_migrations, asynchronously, on create and whenever the app's code changed.

        The physical id carries `code_version(source_dir)`, so an update that changes the code changes the
        resource's properties and CloudFormation updates it (which re-invokes); the replaced id needs no delete.
        "Event" invocation: the deploy waits for Lambda to accept the event, not for the migrations to enqueue.
        """
        logical_id = to_cfn_resource_name(MIGRATIONS_FUNCTION)
        generated = self._sam_template()["Resources"].get(logical_id)
        if generated is None or generated["Type"] != "AWS::Serverless::Function":
            raise RuntimeError(f"app.py registers no function {MIGRATIONS_FUNCTION!r} ({logical_id})")
        function = self.chalice.get_resource(logical_id)
        function_arn = cdk.Token.as_string(function.get_att("Arn"))
        invoke = cr.AwsSdkCall(
            service="Lambda",
            action="Invoke",
            parameters={"FunctionName": function.ref, "InvocationType": "Event"},
            physical_resource_id=cr.PhysicalResourceId.of(f"{MIGRATIONS_FUNCTION}-{code_version(source_dir)}"),
            output_paths=["StatusCode"],
        )
        migrations = cr.AwsCustomResource(
            self,
            "MigrationsAfterDeploy",
            on_create=invoke,
            on_update=invoke,
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function_arn])]
            ),
            install_latest_aws_sdk=False,  # the runtime's SDK; no download from npm at deploy time
        )
        # The function's Ref already orders it before the invocation. The function enqueues into the queues and
        # reads the tables as the stack role, so the invocation also waits for the role's policy, which in turn
        # GetAtt's every queue and table: they exist by then. (DependsOn the resource only, not its IAM policy.)
        resource = migrations.node.find_child("Resource")
        resource.node.add_dependency(self.role.node.find_child("DefaultPolicy"))
        self._drop_redundant_depends_on(_AWS_CUSTOM_RESOURCE_PROVIDER_ID, "Resource")
        return migrations
