"""The apply pipeline: executions (attempts) and their worker run, the lease,
health checks (declared specs and the probes that run them), fault points for
tests, the notification outbox, and the Celery tasks."""
