"""The Azure OpenAI layout: POST /openai/deployments/{deployment}/... with `?api-version=` and `api-key`.

The deployment name is the model name; a `model` in the body is ignored, as Azure does. Bodies, answers and
errors are OpenAI's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls import Call
from ..exchange import send_error
from .base import Route
from .embeddings import Embeddings
from .images import Images
from .openai import OpenAIChat

if TYPE_CHECKING:
    from ..state import Gateway

API_VERSION_MISSING = "The api-version query parameter (?api-version=) is required for all requests."
DEPLOYMENT_NOT_FOUND = ("The API deployment for this resource does not exist. If you created the deployment "
                        "within the last 5 minutes, please wait a moment and try again.")
PREFIX = "/openai/deployments/{deployment}/"


class AzureDeployment:
    """Mixed in before an OpenAI dialect: the deployment's model, Azure's `api-key` header, `api-version`."""

    configurable = False  # the endpoint name is the plain OpenAI dialect's; `routes:` extends that one

    async def handle(self, gw: Gateway, request: web.Request) -> web.StreamResponse:
        """`api-version` is required before anything else."""
        if not request.query.get("api-version"):
            return await send_error(request, request["ctx"], self, 400, "invalid_request",
                                    API_VERSION_MISSING, "api-version", code="MissingApiVersionParameter")
        return await super().handle(gw, request)

    def api_key(self, request: web.Request) -> str | None:
        """`api-key`, else the OpenAI routes' credentials."""
        return request.headers.get("api-key") or super().api_key(request)

    def parse(self, body: Any, request: web.Request) -> Call:
        """The OpenAI request with the model set to the deployment name."""
        if isinstance(body, dict):
            body = {**body, "model": self.path_model(request)}
        return super().parse(body, request)

    def unknown_model(self, model: str) -> tuple[str, str | None, str | None]:
        """Azure's 404 for a deployment that does not exist."""
        return DEPLOYMENT_NOT_FOUND, None, "DeploymentNotFound"


class AzureChat(AzureDeployment, OpenAIChat):
    """POST /openai/deployments/{deployment}/chat/completions."""

    routes = (Route("POST", PREFIX + "chat/completions", model_in_path="deployment"),)


class AzureEmbeddings(AzureDeployment, Embeddings):
    """POST /openai/deployments/{deployment}/embeddings."""

    routes = (Route("POST", PREFIX + "embeddings", model_in_path="deployment"),)


class AzureImages(AzureDeployment, Images):
    """POST /openai/deployments/{deployment}/images/generations."""

    routes = (Route("POST", PREFIX + "images/generations", model_in_path="deployment"),)
