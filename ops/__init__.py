"""What operators run the service with: /healthz, /readyz, /metrics and the log
format."""
