"""The synthesized CloudFormation template, held against the queue specs and the PynamoDB models.

Each stage is synthesized once, in a subprocess exactly as the CDK CLI runs the app (`python -m infra.cdk.app`
with CDK_OUTDIR set): Chalice imports app.py to package it, and app.py takes its queue names from STAGE at
import time, so one process can only ever package one stage. Every expected value below is computed from
`QUEUES`, `all_models()` / `table_schema()` and `Settings`, never copied, so changing a spec without the
stack following it (or the other way round) fails here. The streamer's service is held against its per-stage
config (`STREAMER_CONFIGS`) and against streamer/Dockerfile, which the image asset is built from; one more
synthesis (dev, with a certificate and a domain as context) covers the optional HTTPS listener.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chalice.utils import to_cfn_resource_name

from chalicelib.jobs.queues import QUEUES, VISIBILITY_FACTOR, QueueSpec, get_queue, lambda_queues
from chalicelib.models import all_models
from chalicelib.models.base import table_schema
from chalicelib.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("dev", "prod")
SYNTH_TIMEOUT = 600  # a cold Chalice dependency cache means a pip download of requirements.txt
REPORT_BATCH_ITEM_FAILURES = ["ReportBatchItemFailures"]

pytestmark = [pytest.mark.infra, pytest.mark.timeout(SYNTH_TIMEOUT + 120)]

Resource = dict[str, Any]


@dataclass
class EventSource:
    """An SQS event source, whether a SAM SQS event on a function or a plain AWS::Lambda::EventSourceMapping."""

    function_id: str
    queue_arn: Any
    properties: dict[str, Any]


@dataclass
class Synth:
    stage: str
    template_path: Path
    template: dict[str, Any]
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = Settings(stage=self.stage)

    @property
    def resources(self) -> dict[str, Resource]:
        result: dict[str, Resource] = self.template["Resources"]
        return result

    def of_type(self, resource_type: str) -> dict[str, Resource]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def one(self, resource_type: str, prop: str, value: Any) -> tuple[str, Resource]:
        found = [(k, v) for k, v in self.of_type(resource_type).items() if v["Properties"].get(prop) == value]
        assert len(found) == 1, f"expected one {resource_type} with {prop}={value!r}, found {[k for k, _ in found]}"
        return found[0]

    def queue(self, name: str) -> tuple[str, Resource]:
        return self.one("AWS::SQS::Queue", "QueueName", name)

    def function(self, name: str) -> tuple[str, Resource]:
        logical_id = to_cfn_resource_name(name)  # how Chalice names a function's resource
        resource = self.resources.get(logical_id)
        assert resource is not None, f"no function {name!r} ({logical_id}) in the template"
        assert resource["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")
        return logical_id, resource

    def event_sources(self) -> list[EventSource]:
        found = []
        for logical_id, fn in self.of_type("AWS::Serverless::Function").items():
            for event in fn["Properties"].get("Events", {}).values():
                if event["Type"] == "SQS":
                    found.append(EventSource(logical_id, event["Properties"]["Queue"], event["Properties"]))
        for esm in self.of_type("AWS::Lambda::EventSourceMapping").values():
            props = esm["Properties"]
            function_ref = props["FunctionName"]
            function_id = function_ref.get("Ref") or function_ref.get("Fn::GetAtt", [None])[0]
            found.append(EventSource(function_id, props["EventSourceArn"], props))
        return found


def _synthesize(stage: str, workdir: Path, context: dict[str, str] | None = None) -> Synth:
    if shutil.which("node") is None:
        pytest.fail("Node.js is needed to synthesize the CDK stack (`make system-deps` installs it)")
    outdir = workdir / "cdk.out"
    env = {
        **os.environ,
        "STAGE": stage,
        "CDK_OUTDIR": str(outdir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    env.pop("CDK_CONTEXT_JSON", None)
    if context:
        env["CDK_CONTEXT_JSON"] = json.dumps(context)  # how the CDK CLI hands `-c key=value` to the app
    # The working directory is where Chalice writes chalice.out/, so each synthesis gets its own.
    result = subprocess.run(
        [sys.executable, "-m", "infra.cdk.app"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=SYNTH_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"synthesis of {stage} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    manifest = json.loads((outdir / "manifest.json").read_text())
    stacks = [a for a in manifest["artifacts"].values() if a["type"] == "aws:cloudformation:stack"]
    assert len(stacks) == 1, f"expected one stack per stage, found {len(stacks)}"
    template_path = outdir / stacks[0]["properties"]["templateFile"]
    return Synth(stage, template_path, json.loads(template_path.read_text()))


@pytest.fixture(scope="module", params=STAGES)
def synth(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Given the stack of one stage, synthesized once for all the tests of this module."""
    return _synthesize(request.param, tmp_path_factory.mktemp(f"cdk-{request.param}"))


def _arn_of(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _lambda_spec_ids() -> list[str]:
    return [spec.name for spec in lambda_queues()]


# -- SQS: queues, DLQs, event sources --------------------------------------------------------------------------


def _assert_consumer_event_source(synth: Synth, spec: QueueSpec) -> None:
    # Given the queue's consumer function and the queue itself
    function_id, _ = synth.function(spec.consumer_name)
    queue_id, _ = synth.queue(spec.queue_name(synth.settings))

    # When looking for the event sources of that function
    sources = [s for s in synth.event_sources() if s.function_id == function_id]

    # Then there is exactly one, on the CDK queue, with the spec's batching and concurrency and partial failures
    assert len(sources) == 1, f"{spec.consumer_name}: {len(sources)} SQS event sources"
    source = sources[0]
    assert source.queue_arn == _arn_of(queue_id)
    assert source.properties["BatchSize"] == spec.batch_size
    assert source.properties.get("MaximumBatchingWindowInSeconds", 0) == spec.max_batching_window
    assert source.properties["ScalingConfig"]["MaximumConcurrency"] == spec.max_concurrency
    assert source.properties["FunctionResponseTypes"] == REPORT_BATCH_ITEM_FAILURES


@pytest.mark.parametrize("spec", lambda_queues(), ids=_lambda_spec_ids())
def test_each_lambda_queue_feeds_its_consumer_with_the_spec_settings(synth: Synth, spec: QueueSpec) -> None:
    _assert_consumer_event_source(synth, spec)


@pytest.fixture(scope="module")
def transformed(synth: Synth) -> Synth:
    """The template as CloudFormation deploys it, after the SAM transform (with aws-sam-translator, if installed)."""
    sam = pytest.importorskip("samtranslator.translator.transform", reason="aws-sam-translator is not installed")

    class NoManagedPolicies:  # the functions use the stack's role: SAM attaches no managed policy of its own
        def load(self) -> dict[str, str]:
            return {}

    region = {"AWS::Region": synth.settings.aws_region}
    return Synth(
        synth.stage, synth.template_path, sam.transform(copy.deepcopy(synth.template), region, NoManagedPolicies())
    )


@pytest.mark.parametrize("spec", lambda_queues(), ids=_lambda_spec_ids())
def test_after_the_sam_transform_each_consumer_has_its_event_source_mapping(
    transformed: Synth, spec: QueueSpec
) -> None:
    # The SAM SQS event becomes an AWS::Lambda::EventSourceMapping that keeps every property set above.
    assert not transformed.of_type("AWS::Serverless::Function")
    _assert_consumer_event_source(transformed, spec)


def test_only_lambda_queues_have_lambda_event_sources(synth: Synth) -> None:
    # Given the ARNs of the queues that a Lambda consumes
    expected = sorted(json.dumps(_arn_of(synth.queue(spec.queue_name(synth.settings))[0])) for spec in lambda_queues())

    # When collecting every SQS event source of the template
    actual = sorted(json.dumps(source.queue_arn) for source in synth.event_sources())

    # Then each Lambda queue has one and the streamer's queues (torrent) none
    assert actual == expected


@pytest.mark.parametrize("spec", QUEUES, ids=[spec.name for spec in QUEUES])
def test_each_queue_has_its_dlq_with_the_spec_settings(synth: Synth, spec: QueueSpec) -> None:
    # Given the queue and the DLQ named after the spec
    _, queue = synth.queue(spec.queue_name(synth.settings))
    dlq_id, dlq = synth.queue(spec.dlq_name(synth.settings))
    props, dlq_props = queue["Properties"], dlq["Properties"]

    # Then the queue redrives to that DLQ after the spec's number of receives
    assert props["RedrivePolicy"] == {"deadLetterTargetArn": _arn_of(dlq_id), "maxReceiveCount": spec.max_receive_count}
    # And both have the spec's timeouts, retention and FIFO-ness
    assert props["VisibilityTimeout"] == spec.visibility_timeout
    assert props["MessageRetentionPeriod"] == spec.retention_seconds
    assert dlq_props["MessageRetentionPeriod"] == spec.dlq_retention_seconds
    for p in (props, dlq_props):
        assert bool(p.get("FifoQueue", False)) == spec.fifo
        if spec.fifo:
            assert p.get("ContentBasedDeduplication", False) is False
    assert "RedrivePolicy" not in dlq_props


def test_the_stack_has_no_queue_the_specs_do_not_name(synth: Synth) -> None:
    # Given every queue and DLQ name the specs derive for this stage
    expected = sorted(
        name for spec in QUEUES for name in (spec.queue_name(synth.settings), spec.dlq_name(synth.settings))
    )

    # Then the template holds exactly those queues
    assert sorted(q["Properties"]["QueueName"] for q in synth.of_type("AWS::SQS::Queue").values()) == expected


@pytest.mark.parametrize("spec", lambda_queues(), ids=_lambda_spec_ids())
def test_consumer_timeout_is_the_spec_handler_timeout(synth: Synth, spec: QueueSpec) -> None:
    # Given the consumer function and its queue
    _, function = synth.function(spec.consumer_name)
    _, queue = synth.queue(spec.queue_name(synth.settings))

    # Then the function times out after the spec's handler timeout
    timeout = function["Properties"]["Timeout"]
    assert timeout == spec.handler_timeout
    # And the queue hides a message long enough for AWS's rule (visibility >= 6x the function timeout)
    assert queue["Properties"]["VisibilityTimeout"] >= VISIBILITY_FACTOR * timeout


@pytest.mark.parametrize("spec", QUEUES, ids=[spec.name for spec in QUEUES])
def test_each_dlq_has_a_not_empty_alarm(synth: Synth, spec: QueueSpec) -> None:
    # Given the DLQ of the queue
    dlq_id, _ = synth.queue(spec.dlq_name(synth.settings))
    dimension = [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]

    # When looking for alarms on that DLQ's visible messages
    alarms = [
        a["Properties"]
        for a in synth.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Dimensions") == dimension
        and a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    ]

    # Then one fires as soon as there is one, and notifies someone
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["AlarmActions"]


# -- DynamoDB ----------------------------------------------------------------------------------------------------


def _sorted(items: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: str(item[key]))


@pytest.mark.parametrize("model", all_models(), ids=[m.Meta.logical_name for m in all_models()])
def test_each_table_matches_its_model(synth: Synth, model: Any) -> None:
    # Given the model's schema and the table named after it
    schema = table_schema(model)
    _, table = synth.one("AWS::DynamoDB::Table", "TableName", synth.settings.resource_name(schema["logical_name"]))
    props = table["Properties"]

    # Then keys, attribute types and indexes are the model's
    assert props["KeySchema"] == schema["key_schema"]
    assert _sorted(props["AttributeDefinitions"], "AttributeName") == _sorted(
        schema["attribute_definitions"], "AttributeName"
    )
    expected_indexes = {
        gsi["index_name"]: {"KeySchema": gsi["key_schema"], "Projection": gsi["projection"]}
        for gsi in schema["global_secondary_indexes"]
    }
    actual_indexes = {
        gsi["IndexName"]: {"KeySchema": gsi["KeySchema"], "Projection": gsi["Projection"]}
        for gsi in props.get("GlobalSecondaryIndexes", [])
    }
    assert actual_indexes == expected_indexes
    # And items expire by the model's TTL attribute; capacity is on demand
    if schema["ttl_attribute"]:
        assert props["TimeToLiveSpecification"] == {"AttributeName": schema["ttl_attribute"], "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in props
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    # And only prod keeps backups and outlives the stack
    pitr = props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled", False)
    assert pitr is (synth.stage == "prod")
    assert table["DeletionPolicy"] == ("Retain" if synth.stage == "prod" else "Delete")


def test_the_stack_has_no_table_the_models_do_not_name(synth: Synth) -> None:
    expected = sorted(synth.settings.resource_name(table_schema(m)["logical_name"]) for m in all_models())
    assert sorted(t["Properties"]["TableName"] for t in synth.of_type("AWS::DynamoDB::Table").values()) == expected


# -- S3, IAM, the Chalice functions ------------------------------------------------------------------------------


def test_bucket_is_private_encrypted_and_tls_only(synth: Synth) -> None:
    # Given the stack's one bucket
    buckets = synth.of_type("AWS::S3::Bucket")
    assert len(buckets) == 1
    ((bucket_id, bucket),) = buckets.items()
    props = bucket["Properties"]

    # Then no public access, encryption at rest, and a policy that refuses plain HTTP
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    policies = [
        p for p in synth.of_type("AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    )
    assert bucket["DeletionPolicy"] == ("Retain" if synth.stage == "prod" else "Delete")


def _role_statements(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    statements = []
    for policy in synth.of_type("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    for policy in synth.of_type("AWS::IAM::ManagedPolicy").values():
        if {"Ref": role_id} in policy["Properties"].get("Roles", []):
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _allows(statements: list[dict[str, Any]], action: str, resource: Any) -> bool:
    def as_list(value: Any) -> list[Any]:
        return value if isinstance(value, list) else [value]

    return any(
        s["Effect"] == "Allow" and action in as_list(s["Action"]) and resource in as_list(s["Resource"])
        for s in statements
    )


def test_every_function_runs_as_the_stack_role_with_the_stage_environment(synth: Synth) -> None:
    # Given the functions Chalice generated, the role and the bucket of the stack
    functions = synth.of_type("AWS::Serverless::Function")
    ((bucket_id, _),) = synth.of_type("AWS::S3::Bucket").items()
    roles = {json.dumps(fn["Properties"]["Role"]) for fn in functions.values()}

    # Then all of them run as one role that the stack itself creates
    assert len(roles) == 1
    role_ref = json.loads(roles.pop())
    role_id = role_ref["Fn::GetAtt"][0]
    assert synth.resources[role_id]["Type"] == "AWS::IAM::Role"
    # And they know their stage and the bucket's generated name; Chalice packaged the same stage
    for logical_id, fn in functions.items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables["STAGE"] == synth.stage, logical_id
        assert variables["BUCKET_NAME"] == {"Ref": bucket_id}, logical_id
        assert f"stage={synth.stage}:" in fn["Properties"]["Tags"]["aws-chalice"], logical_id


def test_the_role_reaches_every_queue_table_index_and_the_bucket(synth: Synth) -> None:
    # Given the role the functions run as, and what it may do
    _, function = synth.function(lambda_queues()[0].consumer_name)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = _role_statements(synth, role_id)
    managed = synth.resources[role_id]["Properties"].get("ManagedPolicyArns", [])

    # Then it writes logs
    assert any("AWSLambdaBasicExecutionRole" in json.dumps(arn) for arn in managed)
    # And sends to, receives from and inspects every queue and DLQ; it may move DLQ messages back
    for spec in QUEUES:
        dlq_id, _ = synth.queue(spec.dlq_name(synth.settings))
        for name in (spec.queue_name(synth.settings), spec.dlq_name(synth.settings)):
            queue_arn = _arn_of(synth.queue(name)[0])
            for action in ("sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
                assert _allows(statements, action, queue_arn), (action, name)
        assert _allows(statements, "sqs:StartMessageMoveTask", _arn_of(dlq_id))
    # And reads and writes every table and its indexes
    for model in all_models():
        table_id, _ = synth.one(
            "AWS::DynamoDB::Table", "TableName", synth.settings.resource_name(table_schema(model)["logical_name"])
        )
        index_arn = {"Fn::Join": ["", [_arn_of(table_id), "/index/*"]]}
        for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"):
            assert _allows(statements, action, _arn_of(table_id)), action
        if table_schema(model)["global_secondary_indexes"]:
            assert _allows(statements, "dynamodb:Query", index_arn)
    # And the objects of the bucket
    ((bucket_id, _),) = synth.of_type("AWS::S3::Bucket").items()
    objects_arn = {"Fn::Join": ["", [_arn_of(bucket_id), "/*"]]}
    assert _allows(statements, "s3:PutObject", objects_arn)
    assert _allows(statements, "s3:GetObject*", objects_arn)


def test_consumers_wait_for_the_role_policy(synth: Synth) -> None:
    # An event source mapping is refused when its role cannot yet receive from the queue, so every consumer
    # (and with it the mapping SAM generates) is created after the role's policies.
    _, function = synth.function(lambda_queues()[0].consumer_name)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    policy_ids = {
        logical_id
        for logical_id, p in {**synth.of_type("AWS::IAM::Policy"), **synth.of_type("AWS::IAM::ManagedPolicy")}.items()
        if {"Ref": role_id} in p["Properties"].get("Roles", [])
    }
    assert policy_ids
    for spec in lambda_queues():
        _, fn = synth.function(spec.consumer_name)
        assert policy_ids <= set(fn.get("DependsOn", [])), spec.consumer_name


# -- migrations after each deploy ----------------------------------------------------------------------------------


MIGRATIONS_FUNCTION = "run_migrations"


def _json_with_tokens(value: Any) -> Any:
    """A custom resource's JSON property, whether a plain string or an Fn::Join of strings and intrinsics (which
    come back in place, e.g. `{"Ref": ...}`, where they make up a whole JSON string)."""
    if isinstance(value, str):
        return json.loads(value)
    separator, parts = value["Fn::Join"]
    assert separator == ""
    tokens = {f"__token_{i}__": part for i, part in enumerate(parts) if not isinstance(part, str)}
    markers = {id(part): name for name, part in tokens.items()}
    text = "".join(part if isinstance(part, str) else markers[id(part)] for part in parts)

    def restore(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: restore(v) for k, v in node.items()}
        if isinstance(node, list):
            return [restore(v) for v in node]
        return tokens.get(node, node) if isinstance(node, str) else node

    return restore(json.loads(text))


def _migration_invokers(synth: Synth) -> dict[str, Resource]:
    """The AwsCustomResources whose calls invoke the run_migrations function."""
    function_id, _ = synth.function(MIGRATIONS_FUNCTION)
    found = {}
    for logical_id, resource in synth.of_type("Custom::AWS").items():
        calls = [
            _json_with_tokens(resource["Properties"][k]) for k in ("Create", "Update") if k in resource["Properties"]
        ]
        if any(call.get("parameters", {}).get("FunctionName") in (function_id, {"Ref": function_id}) for call in calls):
            found[logical_id] = resource
    return found


def test_each_deploy_invokes_run_migrations_asynchronously(synth: Synth) -> None:
    from infra.cdk.stack import code_version

    # Given the one custom resource that invokes the run_migrations function
    function_id, _ = synth.function(MIGRATIONS_FUNCTION)
    invokers = _migration_invokers(synth)
    assert len(invokers) == 1, f"expected one custom resource invoking {function_id}, found {sorted(invokers)}"
    ((_, invoker),) = invokers.items()

    # Then it invokes it both when created and when updated, and as an event: the deploy does not wait on it
    for phase in ("Create", "Update"):
        call = _json_with_tokens(invoker["Properties"][phase])
        assert call["service"].lower() == "lambda", phase
        assert call["action"] in ("Invoke", "invoke", "InvokeCommand"), phase
        assert call["parameters"] == {"FunctionName": {"Ref": function_id}, "InvocationType": "Event"}, phase
        # And its physical id is the version of the app's code, so a code change updates it and invokes again
        assert code_version(ROOT) in call["physicalResourceId"]["id"], phase
    assert "Delete" not in invoker["Properties"]


def test_the_migrations_invoker_may_only_invoke_run_migrations(synth: Synth) -> None:
    # Given the provider function behind the invoker and the role it runs as
    function_id, _ = synth.function(MIGRATIONS_FUNCTION)
    ((_, invoker),) = _migration_invokers(synth).items()
    provider_id = invoker["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    provider = synth.resources[provider_id]
    assert provider["Type"] == "AWS::Lambda::Function"
    role_id = provider["Properties"]["Role"]["Fn::GetAtt"][0]

    # Then its policies allow lambda:InvokeFunction on that one function and nothing else
    statements = _role_statements(synth, role_id)
    assert statements
    for statement in statements:
        assert statement == {
            "Effect": "Allow",
            "Action": statement["Action"],
            "Resource": statement["Resource"],
        }, statement
        assert statement["Action"] in ("lambda:InvokeFunction", ["lambda:InvokeFunction"]), statement
        assert statement["Resource"] in (_arn_of(function_id), [_arn_of(function_id)]), statement
    # And beyond them, it may only write its logs
    managed = synth.resources[role_id]["Properties"].get("ManagedPolicyArns", [])
    assert all("service-role/AWSLambdaBasicExecutionRole" in json.dumps(arn) for arn in managed), managed


def _references(node: Any) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return {node["Ref"]}
        if set(node) == {"Fn::GetAtt"}:
            return {node["Fn::GetAtt"][0]}
        return {ref for value in node.values() for ref in _references(value)}
    if isinstance(node, list):
        return {ref for value in node for ref in _references(value)}
    return set()


def test_migrations_run_once_the_function_its_policy_queues_and_tables_exist(synth: Synth) -> None:
    # Given everything the invoker waits for, directly (DependsOn, Ref, GetAtt) or through what it waits for
    ((invoker_id, _),) = _migration_invokers(synth).items()
    waits_for: set[str] = set()
    pending = [invoker_id]
    while pending:
        resource = synth.resources[pending.pop()]
        depends_on = resource.get("DependsOn", [])
        direct = _references(resource.get("Properties", {})) | set(
            [depends_on] if isinstance(depends_on, str) else depends_on
        )
        new = {ref for ref in direct if ref in synth.resources} - waits_for
        waits_for |= new
        pending.extend(new)

    # Then that is the function, the policy of the role it runs as, and every queue, DLQ and table it may use
    function_id, function = synth.function(MIGRATIONS_FUNCTION)
    assert function_id in waits_for
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    policy_ids = {
        k for k, p in synth.of_type("AWS::IAM::Policy").items() if {"Ref": role_id} in p["Properties"]["Roles"]
    }
    assert policy_ids
    assert policy_ids <= waits_for
    for spec in QUEUES:
        for name in (spec.queue_name(synth.settings), spec.dlq_name(synth.settings)):
            assert synth.queue(name)[0] in waits_for, name
    for model in all_models():
        name = synth.settings.resource_name(table_schema(model)["logical_name"])
        assert synth.one("AWS::DynamoDB::Table", "TableName", name)[0] in waits_for, name


def _app_tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_code_version_follows_every_app_file_but_not_bytecode(tmp_path: Path) -> None:
    from infra.cdk.stack import code_version

    # Given two copies of one app, and variants that each differ in one file
    files = {"app.py": "import chalicelib\n", "chalicelib/__init__.py": "", "chalicelib/jobs/migrations.py": "A = 1\n"}
    same = [_app_tree(tmp_path / name, files) for name in ("one", "two")]
    variants = {
        "chalicelib file edited": {**files, "chalicelib/jobs/migrations.py": "A = 2\n"},
        "app.py edited": {**files, "app.py": "import chalicelib  # changed\n"},
        "chalicelib file added": {**files, "chalicelib/jobs/new.py": ""},
        "chalicelib file renamed": {
            **{k: v for k, v in files.items() if k != "chalicelib/jobs/migrations.py"},
            "chalicelib/jobs/migration.py": "A = 1\n",
        },
    }

    # Then the same tree gives the same digest, and each variant another one
    digest = code_version(same[0])
    assert digest == code_version(same[1]) == code_version(same[0])
    for what, variant in variants.items():
        assert code_version(_app_tree(tmp_path / what.replace(" ", "-"), variant)) != digest, what
    # And compiled bytecode, which Python writes as it imports, changes nothing
    _app_tree(same[1], {"chalicelib/__pycache__/__init__.cpython-311.pyc": "bytes"})
    assert code_version(same[1]) == digest


# -- the streamer: ECS Fargate behind an ALB -----------------------------------------------------------------------


DOCKERFILE = ROOT / "streamer" / "Dockerfile"
ANYWHERE = "0.0.0.0/0"
TLS_CONTEXT = {
    "certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000",
    "streamer_domain": "stream.example.org",
}


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (INSTRUCTION, arguments), continuation lines joined, comments left out."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        instruction, _, arguments = text.partition(" ")
        instructions.append((instruction.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def _dockerfile_values(instruction: str) -> list[str]:
    return [arguments for name, arguments in _dockerfile() if name == instruction]


@dataclass
class Streamer:
    task_id: str
    task: Resource
    container: dict[str, Any]
    service_id: str
    service: Resource


def _streamer(synth: Synth) -> Streamer:
    tasks = synth.of_type("AWS::ECS::TaskDefinition")
    services = synth.of_type("AWS::ECS::Service")
    assert len(tasks) == 1, f"expected one task definition, found {sorted(tasks)}"
    assert len(services) == 1, f"expected one ECS service, found {sorted(services)}"
    ((task_id, task),) = tasks.items()
    ((service_id, service),) = services.items()
    containers = task["Properties"]["ContainerDefinitions"]
    assert len(containers) == 1, [c["Name"] for c in containers]
    return Streamer(task_id, task, containers[0], service_id, service)


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["Name"]: variable["Value"] for variable in container.get("Environment", [])}


def _ingress(synth: Synth, group_id: str) -> set[tuple[str, int, int, str]]:
    """A security group's inbound rules, inline or separate, as (protocol, from port, to port, source)."""
    rules = list(synth.resources[group_id]["Properties"].get("SecurityGroupIngress", []))
    rules += [
        r["Properties"]
        for r in synth.of_type("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
    ]
    found = set()
    for rule in rules:
        if "SourceSecurityGroupId" in rule:
            source = "sg:" + rule["SourceSecurityGroupId"]["Fn::GetAtt"][0]
        else:
            source = rule.get("CidrIp") or rule["CidrIpv6"]
        found.add((rule["IpProtocol"], rule.get("FromPort"), rule.get("ToPort"), source))
    return found


def _load_balancer(synth: Synth) -> tuple[str, Resource]:
    balancers = synth.of_type("AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert len(balancers) == 1, sorted(balancers)
    ((balancer_id, balancer),) = balancers.items()
    return balancer_id, balancer


def _listeners(synth: Synth) -> dict[int, Resource]:
    balancer_id, _ = _load_balancer(synth)
    listeners = [
        listener
        for listener in synth.of_type("AWS::ElasticLoadBalancingV2::Listener").values()
        if listener["Properties"]["LoadBalancerArn"] == {"Ref": balancer_id}
    ]
    return {listener["Properties"]["Port"]: listener for listener in listeners}


def _streamer_url(synth: Synth) -> dict[str, Any]:
    balancer_id, _ = _load_balancer(synth)
    return {"Fn::Join": ["", ["http://", {"Fn::GetAtt": [balancer_id, "DNSName"]}]]}


def test_the_streamer_is_a_fargate_service_in_public_subnets_without_nat(synth: Synth) -> None:
    from infra.cdk.stack import streamer_config

    # Given the stack's one cluster, service and task definition
    clusters = synth.of_type("AWS::ECS::Cluster")
    assert len(clusters) == 1
    ((cluster_id, _),) = clusters.items()
    streamer = _streamer(synth)
    props, task = streamer.service["Properties"], streamer.task["Properties"]

    # Then the service runs that task on that cluster, on Fargate (Spot only where the stage's config says so)
    assert props["Cluster"] == {"Ref": cluster_id}
    assert props["TaskDefinition"] == {"Ref": streamer.task_id}
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["NetworkMode"] == "awsvpc"
    providers = [s["CapacityProvider"] for s in props.get("CapacityProviderStrategy", [])]
    if streamer_config(synth.stage).spot:
        assert providers == ["FARGATE_SPOT"]
        associations = synth.of_type("AWS::ECS::ClusterCapacityProviderAssociations")
        assert [a["Properties"]["Cluster"] for a in associations.values()] == [{"Ref": cluster_id}]
        assert "FARGATE_SPOT" in next(iter(associations.values()))["Properties"]["CapacityProviders"]
        assert set(associations) <= set(streamer.service.get("DependsOn", []))
    else:
        assert providers in ([], ["FARGATE"])
        assert props.get("LaunchType", "FARGATE") == "FARGATE"
    # And its tasks get public IPs in public subnets: no NAT gateway to pay for
    network = props["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "ENABLED"
    assert not synth.of_type("AWS::EC2::NatGateway")
    routes = synth.of_type("AWS::EC2::Route").values()
    for subnet in network["Subnets"]:
        subnet_id = subnet["Ref"]
        tables = [
            a["Properties"]["RouteTableId"]
            for a in synth.of_type("AWS::EC2::SubnetRouteTableAssociation").values()
            if a["Properties"]["SubnetId"] == {"Ref": subnet_id}
        ]
        assert tables, subnet_id
        gateway_routes = [
            r for r in routes if r["Properties"]["RouteTableId"] in tables and "GatewayId" in r["Properties"]
        ]
        assert any(r["Properties"]["DestinationCidrBlock"] == ANYWHERE for r in gateway_routes), subnet_id
    # And a deploy that never gets healthy rolls back
    assert props["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}


def test_the_streamer_size_and_count_are_the_stage_config(synth: Synth) -> None:
    from infra.cdk.stack import streamer_config

    # Given the stage's streamer config and the service and task of the template
    config = streamer_config(synth.stage)
    streamer = _streamer(synth)
    task = streamer.task["Properties"]

    # Then the desired count, CPU, memory and disk are the config's
    assert streamer.service["Properties"]["DesiredCount"] == config.desired_count
    assert int(task["Cpu"]) == config.cpu
    assert int(task["Memory"]) == config.memory_mib
    storage = task.get("EphemeralStorage", {}).get("SizeInGiB")
    assert storage == config.ephemeral_storage_gib
    # And the downloads' quota leaves room on that storage (Fargate's 20 GiB without a size) for the image and logs
    quota = int(_environment(streamer.container)["STREAMER_DISK_QUOTA_BYTES"])
    assert 0 < quota <= ((storage or 20) - 2) * 1024**3
    # And the container's own (hard) memory limit is set: the task's memory
    assert streamer.container["Memory"] == config.memory_mib
    # And prod is at least as large as dev
    if synth.stage == "prod":
        dev = streamer_config("dev")
        assert (config.cpu, config.memory_mib) > (dev.cpu, dev.memory_mib)
        assert config.desired_count >= dev.desired_count


def test_the_container_runs_python_m_streamer_as_a_non_root_user(synth: Synth) -> None:
    # Given the Dockerfile the image is built from
    base = _dockerfile_values("FROM")
    users = _dockerfile_values("USER")
    commands = _dockerfile_values("CMD")

    # Then it is the slim Python 3.11 image, that ends as a user other than root and runs `python -m streamer`
    assert base == ["python:3.11-slim-bookworm"]
    assert users, "the Dockerfile sets no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    assert commands and json.loads(commands[-1]) == ["python", "-m", "streamer"]
    assert _dockerfile_values("STOPSIGNAL") == ["SIGTERM"]
    # And the task definition neither replaces that command nor the user
    container = _streamer(synth).container
    assert "Command" not in container and "EntryPoint" not in container
    assert container.get("User") in (None, users[-1]), container.get("User")
    assert container["Essential"] is True


def test_the_image_is_built_from_the_repo_root_with_only_what_it_copies(synth: Synth) -> None:
    # Given the Docker image asset the stack stages into its cloud assembly
    outdir = synth.template_path.parent
    (assets_file,) = outdir.glob("*.assets.json")
    images = json.loads(assets_file.read_text())["dockerImages"]
    assert len(images) == 1, sorted(images)
    ((image_hash, image),) = images.items()
    context = outdir / image["source"]["directory"]

    # Then it is built from streamer/Dockerfile, for the task's platform, and the container runs that image
    assert image["source"]["dockerFile"] == "streamer/Dockerfile"
    assert image["source"].get("platform") == "linux/amd64"
    container, task = _streamer(synth).container, _streamer(synth).task["Properties"]
    assert image_hash in json.dumps(container["Image"])
    assert task["RuntimePlatform"]["CpuArchitecture"] == "X86_64"
    # And its context holds what the Dockerfile copies, as the repository has it, and nothing else
    assert {p.name for p in context.iterdir()} <= {".dockerignore", "requirements.txt", "chalicelib", "streamer"}
    assert (context / "streamer" / "Dockerfile").is_file()
    for arguments in _dockerfile_values("COPY"):
        *sources, _ = arguments.split()
        for source in sources:
            assert (context / source).exists() == (ROOT / source).exists(), source
    leftovers = [p for p in context.rglob("*") if p.name == "__pycache__" or p.suffix in (".pyc", ".pyo")]
    assert not leftovers, leftovers[:5]


def test_downloads_go_to_a_task_volume_the_user_owns(synth: Synth) -> None:
    # Given where the Dockerfile says downloads go, and the volume it declares there
    environment = " ".join(_dockerfile_values("ENV"))
    (volume,) = _dockerfile_values("VOLUME")
    (path,) = json.loads(volume)
    assert f"STREAMER_DOWNLOAD_DIR={path}" in environment.split()
    # (created and handed to the user before the VOLUME, so that the volume starts out theirs)
    instructions = _dockerfile()
    volume_at = instructions.index(("VOLUME", volume))
    assert any(name == "RUN" and "chown" in args and path in args for name, args in instructions[:volume_at])

    # Then the task mounts a volume of its own, read-write, at that same absolute path (ECS then copies the image's
    # directory, with its owner, into it), and tells the process so
    streamer = _streamer(synth)
    mounts = streamer.container["MountPoints"]
    assert [(m["ContainerPath"], m["ReadOnly"]) for m in mounts] == [(path, False)]
    volumes = {v["Name"]: v for v in streamer.task["Properties"]["Volumes"]}
    assert set(volumes[mounts[0]["SourceVolume"]]) == {"Name"}  # a bind mount on the task's ephemeral storage
    assert _environment(streamer.container)["STREAMER_DOWNLOAD_DIR"] == path


def test_the_streamer_knows_its_stage_bucket_and_region_and_logs_with_retention(synth: Synth) -> None:
    # Given the container's environment and the bucket of the stack
    streamer = _streamer(synth)
    environment = _environment(streamer.container)
    ((bucket_id, _),) = synth.of_type("AWS::S3::Bucket").items()

    # Then it has the stage, the bucket's generated name and the stack's region
    assert environment["STAGE"] == synth.stage
    assert environment["BUCKET_NAME"] == {"Ref": bucket_id}
    assert environment["AWS_REGION"] == {"Ref": "AWS::Region"}
    # And it logs to a log group of the stack that expires its events
    options = streamer.container["LogConfiguration"]["Options"]
    assert streamer.container["LogConfiguration"]["LogDriver"] == "awslogs"
    log_group = synth.resources[options["awslogs-group"]["Ref"]]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] > 0


def test_the_streamer_is_health_checked_on_its_health_endpoint(synth: Synth) -> None:
    from infra.cdk.stack import STREAMER_HTTP_PORT, STREAMER_TORRENT_PORT

    # Given the service's load balancer target and its target group
    streamer = _streamer(synth)
    (target,) = streamer.service["Properties"]["LoadBalancers"]
    group = synth.resources[target["TargetGroupArn"]["Ref"]]["Properties"]

    # Then the load balancer forwards to the container's HTTP port, and checks /health there
    assert (target["ContainerName"], target["ContainerPort"]) == (streamer.container["Name"], STREAMER_HTTP_PORT)
    assert group["Port"] == STREAMER_HTTP_PORT
    assert group["TargetType"] == "ip"
    assert group["HealthCheckPath"] == "/health"
    assert group["Matcher"] == {"HttpCode": "200"}
    # And so does the container's own health check (ECS ignores the image's HEALTHCHECK), as the image's does
    probe = " ".join(streamer.container["HealthCheck"]["Command"])
    assert f"http://127.0.0.1:{STREAMER_HTTP_PORT}/health" in probe
    (image_probe,) = _dockerfile_values("HEALTHCHECK")
    assert f"http://127.0.0.1:{STREAMER_HTTP_PORT}/health" in image_probe and "urllib" in image_probe
    # And the image and the task expose the HTTP port and the torrent port (TCP and UDP)
    ports = {(m["ContainerPort"], m["Protocol"]) for m in streamer.container["PortMappings"]}
    expected = {(STREAMER_HTTP_PORT, "tcp"), (STREAMER_TORRENT_PORT, "tcp"), (STREAMER_TORRENT_PORT, "udp")}
    assert ports == expected
    exposed = {p if "/" in p else f"{p}/tcp" for line in _dockerfile_values("EXPOSE") for p in line.split()}
    assert exposed == {f"{port}/{protocol}" for port, protocol in expected}


def test_the_load_balancer_keeps_idle_streams_open(synth: Synth) -> None:
    # Given the attributes of the streamer's load balancer
    _, balancer = _load_balancer(synth)
    attributes = {a["Key"]: a["Value"] for a in balancer["Properties"]["LoadBalancerAttributes"]}

    # Then it is public, and a paused player's connection survives an hour and more (the default is 60 s)
    assert balancer["Properties"]["Scheme"] == "internet-facing"
    assert int(attributes["idle_timeout.timeout_seconds"]) >= 3600


def test_only_the_load_balancer_reaches_the_http_port_and_peers_the_torrent_port(synth: Synth) -> None:
    from infra.cdk.stack import STREAMER_HTTP_PORT, STREAMER_TORRENT_PORT

    # Given the security groups of the load balancer and of the service
    _, balancer = _load_balancer(synth)
    (lb_group,) = balancer["Properties"]["SecurityGroups"]
    lb_group_id = lb_group["Fn::GetAtt"][0]
    (service_group,) = _streamer(synth).service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"][
        "SecurityGroups"
    ]
    service_group_id = service_group["Fn::GetAtt"][0]

    # Then anyone may reach the load balancer on 80, and only on 80 (no certificate in this synthesis)
    assert _ingress(synth, lb_group_id) == {("tcp", 80, 80, ANYWHERE)}
    assert sorted(_listeners(synth)) == [80]
    assert _listeners(synth)[80]["Properties"]["Protocol"] == "HTTP"
    # And the tasks take HTTP from the load balancer only, and BitTorrent (TCP and UDP) from anyone
    assert _ingress(synth, service_group_id) == {
        ("tcp", STREAMER_HTTP_PORT, STREAMER_HTTP_PORT, f"sg:{lb_group_id}"),
        ("tcp", STREAMER_TORRENT_PORT, STREAMER_TORRENT_PORT, ANYWHERE),
        ("udp", STREAMER_TORRENT_PORT, STREAMER_TORRENT_PORT, ANYWHERE),
    }


def test_the_task_role_consumes_the_torrent_queue_and_uses_the_tables_and_bucket(synth: Synth) -> None:
    # Given the role the streamer's code runs as, and what it may do
    streamer = _streamer(synth)
    role_id = streamer.task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    statements = _role_statements(synth, role_id)
    assert not synth.resources[role_id]["Properties"].get("ManagedPolicyArns")
    torrent = get_queue("torrent")
    assert torrent.consumer == "streamer"
    queue_arn = _arn_of(synth.queue(torrent.queue_name(synth.settings))[0])
    dlq_arn = _arn_of(synth.queue(torrent.dlq_name(synth.settings))[0])

    # Then it consumes the torrent queue and sends to it (held-back jobs, retries) and to its DLQ (given up)
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"):
        assert _allows(statements, action, queue_arn), action
    for arn in (queue_arn, dlq_arn):
        assert _allows(statements, "sqs:SendMessage", arn)
        assert _allows(statements, "sqs:GetQueueUrl", arn)
    # And no other queue
    sqs_resources = [
        r
        for s in statements
        if any(a.startswith("sqs:") for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    ]
    assert all(r in (queue_arn, dlq_arn) for r in sqs_resources), sqs_resources
    # And it reads and writes every table and the bucket's objects
    for model in all_models():
        table_id, _ = synth.one(
            "AWS::DynamoDB::Table", "TableName", synth.settings.resource_name(table_schema(model)["logical_name"])
        )
        for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"):
            assert _allows(statements, action, _arn_of(table_id)), (action, table_id)
    ((bucket_id, _),) = synth.of_type("AWS::S3::Bucket").items()
    objects_arn = {"Fn::Join": ["", [_arn_of(bucket_id), "/*"]]}
    assert _allows(statements, "s3:GetObject*", objects_arn)
    assert _allows(statements, "s3:PutObject", objects_arn)
    # And nothing grants it every action, or anything on every resource
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert not any(a == "*" or a.endswith(":*") for a in actions), statement
        assert "*" not in resources, statement


def test_the_lambdas_reach_the_streamer_through_its_load_balancer(synth: Synth) -> None:
    # Given the URL of the streamer's load balancer
    url = _streamer_url(synth)

    # Then every function is given it, both as the API's way in and as the players' (no domain configured)
    for logical_id, fn in synth.of_type("AWS::Serverless::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables["STREAMER_URL"] == url, logical_id
        assert variables["STREAMER_PUBLIC_URL"] == url, logical_id
    assert synth.template["Outputs"]["StreamerUrl"]["Value"] == url


def _is_secret_variable(name: str) -> bool:
    # (a KMS key's id, e.g. SECRETS_KMS_KEY_ID, names the key; it is not one)
    return any(word in name for word in ("KEY", "SECRET", "TOKEN", "PASSWORD")) and not name.endswith("_KEY_ID")


def test_shared_secrets_are_generated_and_only_referenced(synth: Synth) -> None:
    from infra.cdk.stack import API_SECRETS, SHARED_SECRETS

    # Given the stack's secrets: Secrets Manager generates each one, and the template holds no value
    secrets = synth.of_type("AWS::SecretsManager::Secret")
    assert len(secrets) == len(SHARED_SECRETS) + len(API_SECRETS)
    for secret_id, secret in secrets.items():
        assert "GenerateSecretString" in secret["Properties"], secret_id
        assert "SecretString" not in secret["Properties"], secret_id
        # (prod keeps them with its tables: SECRETS_KEY decrypts what those hold)
        assert secret["DeletionPolicy"] == ("Retain" if synth.stage == "prod" else "Delete")
    streamer = _streamer(synth)
    from_secrets = {s["Name"]: s["ValueFrom"] for s in streamer.container["Secrets"]}
    execution_role_id = streamer.task["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
    execution_statements = _role_statements(synth, execution_role_id)

    # Then the streamer gets each shared secret from its own secret, which ECS may read when it starts the task
    referenced = {name: from_secrets[name]["Ref"] for name in SHARED_SECRETS}
    assert set(from_secrets) == set(SHARED_SECRETS)  # and none of the API's own (JWT_SECRET)
    [jwt_secret] = [secret_id for secret_id in secrets if secret_id not in referenced.values()]
    assert len(set(referenced.values())) == len(SHARED_SECRETS)
    for secret_id in referenced.values():
        assert _allows(execution_statements, "secretsmanager:GetSecretValue", {"Ref": secret_id}), secret_id
    # And every function gets the same secret, as a dynamic reference CloudFormation resolves at deploy time
    for logical_id, fn in synth.of_type("AWS::Serverless::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        for name, secret_id in {**referenced, "JWT_SECRET": jwt_secret}.items():
            assert variables[name] == {
                "Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": secret_id}, ":SecretString:::}}"]]
            }, (logical_id, name)
    # And no secret-looking variable, of a function or of the container, is a plain value
    plain = [
        (owner, name)
        for owner, variables in [
            *(
                (k, fn["Properties"]["Environment"]["Variables"])
                for k, fn in synth.of_type("AWS::Serverless::Function").items()
            ),
            (streamer.task_id, _environment(streamer.container)),
        ]
        for name, value in variables.items()
        if _is_secret_variable(name)
        and not (isinstance(value, dict) and "{{resolve:secretsmanager:" in json.dumps(value))
    ]
    assert plain == []


def test_the_secrets_key_is_generated_as_an_unpadded_fernet_key(synth: Synth) -> None:
    import string

    # Given the generator of the secret the streamer gets as SECRETS_KEY
    from_secrets = {s["Name"]: s["ValueFrom"] for s in _streamer(synth).container["Secrets"]}
    generator = synth.resources[from_secrets["SECRETS_KEY"]["Ref"]]["Properties"]["GenerateSecretString"]

    # Then it draws 43 characters from urlsafe base64's alphabet: a Fernet key (32 bytes) but its one "=" of padding
    alphabet = set(string.ascii_letters + string.digits + string.punctuation) - set(generator["ExcludeCharacters"])
    assert alphabet == set(string.ascii_letters + string.digits + "-_")
    assert generator["PasswordLength"] == 43
    assert generator.get("IncludeSpace") is False
    for flag in ("ExcludeLowercase", "ExcludeUppercase", "ExcludeNumbers", "ExcludePunctuation"):
        assert not generator.get(flag), flag


@pytest.fixture(scope="module")
def tls_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The dev stack synthesized with a certificate and a domain for the streamer (the optional context)."""
    return _synthesize("dev", tmp_path_factory.mktemp("cdk-dev-tls"), context=TLS_CONTEXT)


def test_a_certificate_adds_an_https_listener_and_the_domain_makes_the_public_url(tls_synth: Synth) -> None:
    # Given the listeners of the streamer's load balancer, synthesized with a certificate and a domain
    listeners = _listeners(tls_synth)
    _, balancer = _load_balancer(tls_synth)
    (lb_group,) = balancer["Properties"]["SecurityGroups"]

    # Then HTTPS on 443, with that certificate, forwards to the same targets as HTTP on 80
    assert sorted(listeners) == [80, 443]
    https = listeners[443]["Properties"]
    assert https["Protocol"] == "HTTPS"
    assert https["Certificates"] == [{"CertificateArn": TLS_CONTEXT["certificate_arn"]}]
    assert https["DefaultActions"] == listeners[80]["Properties"]["DefaultActions"]
    assert _ingress(tls_synth, lb_group["Fn::GetAtt"][0]) == {("tcp", 80, 80, ANYWHERE), ("tcp", 443, 443, ANYWHERE)}
    # And players get https:// on the domain, while the API still reaches the load balancer directly
    for logical_id, fn in tls_synth.of_type("AWS::Serverless::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables["STREAMER_PUBLIC_URL"] == f"https://{TLS_CONTEXT['streamer_domain']}", logical_id
        assert variables["STREAMER_URL"] == _streamer_url(tls_synth), logical_id


def test_the_template_with_a_certificate_passes_cfn_lint(tls_synth: Synth) -> None:
    from cfnlint.api import lint

    matches = lint(tls_synth.template_path.read_text(), regions=[tls_synth.settings.aws_region])
    assert [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches] == []


# -- cfn-lint ----------------------------------------------------------------------------------------------------


def test_template_passes_cfn_lint(synth: Synth) -> None:
    from cfnlint.api import lint

    # When cfn-lint checks the synthesized template (SAM resources against SAM's own schemas)
    matches = lint(synth.template_path.read_text(), regions=[synth.settings.aws_region])

    # Then it finds neither errors nor warnings (none is ignored)
    assert [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches] == []


def test_secrets_at_rest_are_envelope_encrypted_under_a_rotating_kms_key_only_the_functions_use(synth: Synth) -> None:
    # Given the stack's KMS key
    ((key_id, key),) = synth.of_type("AWS::KMS::Key").items()
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == ("Retain" if synth.stage == "prod" else "Delete")
    # Then every function names it, and their role may make and open data keys under it
    _, function = synth.function(lambda_queues()[0].consumer_name)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = _role_statements(synth, role_id)
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert _allows(statements, action, {"Fn::GetAtt": [key_id, "Arn"]}), action
    for logical_id, fn in synth.of_type("AWS::Serverless::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables["SECRETS_KMS_KEY_ID"] == {"Fn::GetAtt": [key_id, "Arn"]}, logical_id
    # And the streamer, which stores no secret, neither names it nor may use it
    streamer = _streamer(synth)
    assert "SECRETS_KMS_KEY_ID" not in {v["Name"] for v in streamer.container.get("Environment", [])}
    task_role_id = streamer.task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    assert not _allows(_role_statements(synth, task_role_id), "kms:Decrypt", {"Fn::GetAtt": [key_id, "Arn"]})
