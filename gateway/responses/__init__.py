"""The Responses API (`/v1/responses`): requests translated to the chat completions the engines serve, their
answers and streams translated back, stored responses for retrieval and `previous_response_id`."""

from gateway.responses.api import ResponsesAPI
from gateway.responses.store import ResponseStore

__all__ = ["ResponseStore", "ResponsesAPI"]
