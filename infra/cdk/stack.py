"""One CloudFormation stack per stage: queues, DLQs, tables, bucket, alarms, the Lambdas' role, the Chalice app.

Everything is derived from the same sources the app and the local runtime read: the queue specs
(`chalicelib.jobs.queues.QUEUES`), the PynamoDB models (`all_models()` / `table_schema()`) and the naming
rule in `Settings.resource_name`. Nothing here repeats a number or a name from those.

Chalice packages `app.py` in-process (it imports it), so the queue names in the generated SQS events come
from the environment's STAGE at that moment; the stack sets it, and checks every generated event against
the spec before it points the event at the CDK queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from chalice.cdk import Chalice
from chalice.utils import to_cfn_resource_name
from constructs import Construct

from chalicelib.jobs.queues import QUEUES, QueueSpec
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
# The function app.py registers to enqueue the pending one-time data migrations; the stack runs it after deploys.
MIGRATIONS_FUNCTION = "run_migrations"

# The construct id of the singleton Lambda behind every AwsCustomResource of a stack (CDK names it after the
# "AWS" purpose and the UUID, dashes dropped); its logical id starts with this.
_AWS_CUSTOM_RESOURCE_PROVIDER_ID = "AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", "")

# What the admin API's DLQ redrive needs on a DLQ on top of the above (SQS StartMessageMoveTask).
_MESSAGE_MOVE_ACTIONS = ["sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks", "sqs:CancelMessageMoveTask"]


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
        source_dir: Path = ROOT,
        **kwargs: Any,
    ) -> None:
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

        self.role = self._lambda_role()
        self.chalice = self._chalice_app(source_dir)
        self.functions = self._wire_consumers()
        self.migrations = self._run_migrations_after_deploy(source_dir)

        cdk.CfnOutput(self, "BucketName", value=self.bucket.bucket_name)
        cdk.CfnOutput(self, "LambdaRoleArn", value=self.role.role_arn)

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
        for table in self.tables.values():
            table.grant_read_write_data(role)  # the table and its indexes
        # One statement for every queue and DLQ rather than CDK's per-queue grants, which would overflow the
        # inline policy's size limit into an extra managed policy. Jobs are enqueued and consumed; stats read
        # queue attributes; a job may be parked on its DLQ directly.
        every_queue = [q.queue_arn for q in (*self.queues.values(), *self.dlqs.values())]
        role.add_to_policy(iam.PolicyStatement(actions=_QUEUE_ACTIONS, resources=every_queue))
        role.add_to_policy(
            iam.PolicyStatement(actions=_MESSAGE_MOVE_ACTIONS, resources=[q.queue_arn for q in self.dlqs.values()])
        )
        self.bucket.grant_read_write(role)
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
        environment = {"STAGE": self.stage, "BUCKET_NAME": self.bucket.bucket_name}
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
