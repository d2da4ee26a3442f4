"""The ttbench locustfile: `locust -f locustfiles/gateway.py --scenario scenarios/chat-mix.yaml`.

Works for web UI sessions, headless and distributed runs (master and workers). Its user classes, one per API
family the dialects declare, are `OpenAIUser`, `AnthropicUser` and `GeminiUser`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from locust import events  # noqa: E402

from locustfiles.runtime import install  # noqa: E402
from locustfiles.telemetry import add_arguments as add_metrics_arguments  # noqa: E402
from locustfiles.users import user_classes  # noqa: E402

install()
events.init_command_line_parser.add_listener(lambda parser, **_kw: add_metrics_arguments(parser))
_USERS = user_classes()
globals().update(_USERS)

__all__ = list(_USERS)
