"""What the Azure Functions host does with function_app.py, as far as these tests need it (Core Tools cannot run
here): index the app with the azure-functions package, call a function the way the worker does, and drive the
queue trigger against Azurite with host.json's queue settings (receive, invoke, delete on success; on failure
let the message come back, and after ``maxDequeueCount`` attempts move it to ``<queue>-poison``)."""

from __future__ import annotations

import importlib
import json
import re
import ssl
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from tests.support.https_emulator import Emulator, Request, Response

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST_JSON: dict[str, Any] = json.loads((PROJECT_ROOT / "host.json").read_text(encoding="utf-8"))
QUEUE_SETTINGS: dict[str, Any] = HOST_JSON["extensions"]["queues"]


def indexed_functions() -> dict[str, Any]:
    """function_app indexed as the host indexes it (get_functions may run once per FunctionApp object, so the
    module is reloaded for a fresh one)."""
    import function_app

    app = importlib.reload(function_app).app
    return {f.get_function_name(): f for f in app.get_functions()}


def binding(function: Any, binding_type: str) -> dict[str, Any]:
    (found,) = [b for b in json.loads(function.get_function_json())["bindings"] if b["type"] == binding_type]
    return found


def http_request(method: str, route: str, route_params: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest(method, f"http://localhost:7071/api/{route}", route_params=route_params, body=b"")


class HttpFront(Emulator):
    """The host's HTTP front end for the app's HTTP functions: ``/api/<route>`` on a real (TLS) socket, so that a
    caller from outside (the Graph emulator's validation request and notifications) reaches the function as it would
    in Azure. Only anonymous routes answer without a key; the others want ``?code=`` (any value, as Core Tools)."""

    name = "functions-host"

    def __init__(self, functions: dict[str, Any], ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(ssl_context)
        self.routes: list[tuple[re.Pattern[str], str, set[str], str, Any]] = []
        for function in functions.values():
            found = [b for b in json.loads(function.get_function_json())["bindings"] if b["type"] == "httpTrigger"]
            if found:
                trigger = found[0]
                pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(trigger["route"]))
                methods = {m.upper() for m in trigger.get("methods") or ["GET", "POST"]}
                self.routes.append((re.compile(f"^{pattern}$"), trigger["authLevel"], methods, "", function))
        self.calls: list[tuple[str, int]] = []

    def handle(self, request: Request) -> Response:
        route = request.path.removeprefix("/api/")
        for pattern, auth_level, methods, _, function in self.routes:
            match = pattern.match(route)
            if match is None or request.method not in methods:
                continue
            if auth_level.lower() != "anonymous" and not request.query.get("code"):
                return Response(401)
            incoming = func.HttpRequest(
                request.method,
                f"{request.base_url}{request.raw_path}",
                headers=dict(request.headers.items()),
                params=dict(request.query),
                route_params=match.groupdict(),
                body=request.body,
            )
            answer = function.get_user_function()(incoming)
            self.calls.append((route, answer.status_code))
            headers = {"Content-Type": answer.mimetype + (f"; charset={answer.charset}" if answer.charset else "")}
            return Response(answer.status_code, answer.get_body(), headers)
        return Response(404)


@dataclass
class Delivery:
    body: str
    dequeue_count: int
    error: BaseException | None = None
    result: Any = None


class FunctionsHost:
    def __init__(self, connection_string: str, queue_name: str) -> None:
        self.functions = indexed_functions()
        self.queue_name = queue_name
        self._connection_string = connection_string
        self.queue = self.queue_client(queue_name)
        self.poison = self.queue_client(queue_name + "-poison")

    def queue_client(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(
            self._connection_string,
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )

    def call(self, name: str, *args: Any) -> Any:
        return self.functions[name].get_user_function()(*args)

    def queued(self, queue: QueueClient | None = None) -> list[dict[str, Any]]:
        """The jobs waiting on a queue (peeked, not taken)."""
        return [json.loads(m.content) for m in (queue or self.queue).peek_messages(max_messages=32)]

    def deliver(
        self, function_name: str, queue: QueueClient | None = None, *, max_messages: int = 100
    ) -> list[Delivery]:
        """Runs the queue-triggered function on each message until the queue is empty, as the host does."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        queue = queue or self.queue
        poison_after = int(QUEUE_SETTINGS["maxDequeueCount"])
        deliveries: list[Delivery] = []
        for _ in range(max_messages):
            try:
                message = queue.receive_message(visibility_timeout=60)
            except ResourceNotFoundError:  # nothing was ever queued
                break
            if message is None:
                break
            delivery = Delivery(message.content, message.dequeue_count)
            deliveries.append(delivery)
            trigger = QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count)
            try:
                delivery.result = self.call(function_name, trigger)
            except Exception as err:
                delivery.error = err
                if message.dequeue_count >= poison_after:
                    with suppress(ResourceExistsError):
                        self.poison.create_queue()
                    self.poison.send_message(message.content)
                    queue.delete_message(message)
                else:  # host.json visibilityTimeout, shortened to no wait here
                    queue.update_message(message, visibility_timeout=0)
            else:
                queue.delete_message(message)
        return deliveries

    def serve_http(self, ssl_context: ssl.SSLContext | None) -> str:
        """Serve the HTTP functions on a local port (https with a context); returns the public base URL."""
        self.front = HttpFront(self.functions, ssl_context)
        self.front.start()
        return self.front.base_url

    def close(self) -> None:
        front = getattr(self, "front", None)
        if front is not None:
            front.stop()
        self.queue.close()
        self.poison.close()
