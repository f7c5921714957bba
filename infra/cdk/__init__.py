"""The AWS CDK v2 app: one `ProjectionistStack` per stage, built from the queue specs and the models."""
