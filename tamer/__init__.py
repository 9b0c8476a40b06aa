"""tamer: zero fine-tuning image customization with its data pipeline.

Environment defaults applied on import, before Prefect or Ray read them (setdefault: the
user's own settings win): no telemetry from the offline Prefect server, and Ray's
accelerator-variable warning silenced by opting into its future behaviour.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
