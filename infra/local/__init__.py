"""The local runtime (`make run`): the same app, tables, queues and schedules on one machine."""
