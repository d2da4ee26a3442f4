"""The ttbench locustfile: `locust -f locustfiles/gateway.py --scenario scenarios/chat-mix.yaml`.

Works for web UI sessions, headless runs and distributed runs (master and workers).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from locustfiles.runtime import install  # noqa: E402
from locustfiles.users import AnthropicUser, GeminiUser, OpenAIUser  # noqa: E402

install()

__all__ = ["AnthropicUser", "GeminiUser", "OpenAIUser"]
