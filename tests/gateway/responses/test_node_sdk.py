"""The Responses API through the official Node SDK (npm `openai`, the exact version pinned in
node/package-lock.json), on both tiers: `responses.create`, input items and delete, the `responses.stream()`
helper (its events, their order and sequence numbers, `finalResponse()`), a function call streamed, a
function-call round trip with `previous_response_id`, a stream stopped by its bound and one whose engine dies;
cost and depth in `usage`. node/sdk_check.mjs runs the SDK and prints what it saw as one JSON line; the
assertions are here.

The SDK is installed by the test run itself, with `npm ci` from the committed lock file, into
`~/.cache/tiergate/npm-openai-<version>-<hash of package.json and the lock>/` (`$XDG_CACHE_HOME` is honoured):
once, then reused. Without `node` and `npm` on the PATH the tests are skipped with a loud reason."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import Outcome, create_app
from tests.conftest import Gateway, Recorder, StartGateway, gateway_settings, wait_ready
from tests.engines.vllm_cpu.venv import locked
from tests.gateway.deliberation.test_admission import README_LIMITS, engine
from tests.gateway.keys.test_http import keyed_gateway, new_key
from tests.servers import serving

NODE_DIR = Path(__file__).parent / "node"
MANIFESTS = ("package.json", "package-lock.json")
SCRIPT = NODE_DIR / "sdk_check.mjs"
MARKER = "tiergate-ready"
INSTALL_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 300.0
MODELS = ["qwen3-8b:fast", "qwen3-8b:deliberate"]
LIFECYCLE = ("response.created", "response.in_progress")


def pinned_version() -> str:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    version: str = lock["packages"]["node_modules/openai"]["version"]
    return version


def install_key() -> str:
    """What the cached install holds: both manifests' contents (npm ci refuses a lock out of step)."""
    digest = hashlib.sha256()
    for name in MANIFESTS:
        digest.update((NODE_DIR / name).read_bytes())
    return digest.hexdigest()


def cache_directory() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tiergate" / f"npm-openai-{pinned_version()}-{install_key()[:10]}"


def ready(directory: Path) -> bool:
    marker = directory / MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8") == install_key()


def npm_ci(npm: str, directory: Path) -> None:
    """`npm ci` of the committed lock file into `directory`; the marker is written last, once it succeeded."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for name in MANIFESTS:
        shutil.copyfile(NODE_DIR / name, directory / name)
    log = directory.parent / (directory.name + ".install.log")
    command = [npm, "ci", "--prefix", str(directory), "--ignore-scripts", "--no-audit", "--no-fund"]
    with log.open("wb") as out:
        done = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S, check=False
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode} (log: {log}):\n{tail}")
    (directory / MARKER).write_text(install_key(), encoding="utf-8")


def node_modules(npm: str) -> Path:
    """The cached install's node_modules, installed first when it is missing or was left half-made."""
    directory = cache_directory()
    if not ready(directory):
        with locked(directory):
            if not ready(directory):  # another run may have finished it while this one waited
                npm_ci(npm, directory)
    return directory / "node_modules"


@dataclass
class Served:
    gateway: Gateway
    secret: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One gateway for the module, over a simulated reasoning model, whose qwen3-8b deliberates with the
    default efforts and answers fast from the same engine; a key with the README's limits on both tiers."""
    tmp_path = tmp_path_factory.mktemp("node-sdk-gateway")
    with ExitStack() as stack:

        def start(fast: list[str], deliberate: list[str], **extra: Any) -> Gateway:
            recorder = Recorder()
            app = create_app(gateway_settings(fast, deliberate, **extra), sinks=[recorder])
            url = stack.enter_context(serving(app))
            wait_ready(url)
            return Gateway(url, recorder)

        url = stack.enter_context(engine(reasoning_tokens_range=(300, 600)))
        gateway = keyed_gateway(start, url, tmp_path, deliberation={})
        key = new_key(gateway, limits={"fast": README_LIMITS, "deliberate": README_LIMITS})
        yield Served(gateway, str(key["secret"]))


@dataclass
class Node:
    """sdk_check.mjs, ready to run: a folder of its own whose node_modules is the cached install."""

    node: str
    folder: Path

    def run(self, gateway: Gateway, secret: str, model: str, scenarios: list[str]) -> dict[str, Any]:
        env = {
            **os.environ,
            "TIERGATE_BASE_URL": gateway.v1,
            "TIERGATE_API_KEY": secret,
            "TIERGATE_MODEL": model,
            "TIERGATE_SCENARIOS": ",".join(scenarios),
        }
        done = subprocess.run(
            [self.node, str(self.folder / SCRIPT.name)],
            cwd=self.folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"sdk_check.mjs exited with {done.returncode}:\n{done.stderr}"
        lines = done.stdout.strip().splitlines()
        assert lines, f"sdk_check.mjs printed nothing:\n{done.stderr}"
        results: dict[str, Any] = json.loads(lines[-1])
        assert results["sdk_version"] == pinned_version()  # the lock's SDK, not another one found on the way
        return results


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            "NODE SDK TESTS SKIPPED: `node` and `npm` are not on the PATH (install Node.js 20+ with npm"
            " to run the Responses API through the official Node SDK)"
        )
    modules = node_modules(npm)
    folder = tmp_path_factory.mktemp("node-sdk")
    shutil.copyfile(SCRIPT, folder / SCRIPT.name)
    (folder / "node_modules").symlink_to(modules, target_is_directory=True)
    return Node(node, folder)


SCENARIOS = [
    "create",
    "input_items_and_delete",
    "stream",
    "stream_high_effort",
    "stream_function_call",
    "function_call_round_trip",
    "stream_incomplete",
]


@dataclass
class NodeRun:
    model: str
    results: dict[str, Any]
    gateway: Gateway

    @property
    def deliberate(self) -> bool:
        return self.model.endswith(":deliberate")

    def scenario(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.results[name]
        assert result["ok"], f"the Node SDK failed in {name}: {json.dumps(result['error'], indent=2)}"
        return result


@pytest.fixture(scope="module", params=MODELS)
def node_run(request: pytest.FixtureRequest, served: Served, node: Node) -> NodeRun:
    """Every scenario, once per model, in one run of the script."""
    model: str = request.param
    return NodeRun(model, node.run(served.gateway, served.secret, model, SCENARIOS), served.gateway)


def message_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def request_id(response: dict[str, Any]) -> str:
    return str(response["id"]).removeprefix("resp_")


def check_usage(run: NodeRun, response: dict[str, Any], effort: str = "low") -> dict[str, Any]:
    """OpenAI's token counts, tiergate's cost and, on the deliberate tier only, its depth (returned)."""
    usage = response["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert isinstance(usage["cost_micros"], int) and usage["cost_micros"] > 0
    assert usage["cost_micros"] == sum(usage["cost_details"]["amounts_micros"].values())
    reasoning_tokens = usage["output_tokens_details"]["reasoning_tokens"]
    if not run.deliberate:
        assert "reasoning_depth" not in usage and usage["cost_details"]["rated_tier"] == "fast"
        return {}
    assert usage["cost_details"]["rated_tier"] == "deliberate"
    depth: dict[str, Any] = usage["reasoning_depth"]
    assert set(depth) >= {"floor", "floor_met", "samples", "extensions", "agreement"}
    assert depth["effort"] == effort and depth["floor_met"] is True
    assert (depth["floor"], depth["samples"]) == {"low": (256, 1), "high": (1024, 5)}[effort]
    # the winner's depth; usage counts what every sample and extension generated
    assert depth["floor"] <= depth["reasoning_tokens"] <= reasoning_tokens
    assert usage["cost_details"]["amounts_micros"]["depth_premium"] > 0  # billed: the floor was met
    return depth


def billed_once(run: NodeRun, response: dict[str, Any]) -> None:
    exchange = run.gateway.recorder.wait_for(request_id(response), timeout=60)
    assert exchange.endpoint == "responses"


def test_create(node_run: NodeRun) -> None:
    result = node_run.scenario("create")
    response = result["response"]
    assert result["tier_header"] == node_run.model.split(":")[1]
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["model"] == node_run.model and result["metadata"] == {"run": "node"}
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["reasoning", "message"]  # the simulated engine reasons on both tiers
    reasoning = response["output"][0]["content"][0]
    assert reasoning["type"] == "reasoning_text" and reasoning["text"]
    assert response["output_text"] == message_text(response) != ""
    assert response["previous_response_id"] is None
    assert 0 < response["usage"]["output_tokens"] <= 1500
    check_usage(node_run, response)
    assert result["retrieved"] == response  # stored as it was answered
    billed_once(node_run, response)


def test_input_items_paginated_then_delete(node_run: NodeRun) -> None:
    result = node_run.scenario("input_items_and_delete")
    items = result["items"]  # one page each: the SDK followed `has_more` and `after`
    assert [item["type"] for item in items] == ["message"] * 3
    assert [item["content"] for item in items] == [
        [{"type": "input_text", "text": f"Say {word}."}] for word in ("one", "two", "three")
    ]
    assert len({item["id"] for item in items}) == 3
    # responses.delete() resolved (the SDK types it void), and the response is gone
    gone = result["retrieve_after_delete"]
    assert gone is not None and (gone["status"], gone["code"]) == (404, "response_not_found")


# what the stream helper's finalResponse() adds to the wire's items (structured output, parsed tool arguments)
PARSED = ("parsed", "parsed_arguments")


def unparsed(response: dict[str, Any]) -> dict[str, Any]:
    """A response as the wire had it: without the fields the SDK's parser added."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strip(inner) for key, inner in value.items() if key not in PARSED}
        if isinstance(value, list):
            return [strip(inner) for inner in value]
        return value

    stripped: dict[str, Any] = strip(response)
    return stripped


# each output item's events, in order, consecutive deltas counted as one
SUMMARY_EVENTS = [
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done",
    "response.reasoning_summary_part.done",
]
ITEM_EVENTS = {
    "reasoning": [
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ],
    "message": [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ],
    "function_call": [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ],
}


def expected_events(item: dict[str, Any]) -> list[str]:
    kinds = ITEM_EVENTS[item["type"]]
    if item["type"] == "reasoning":
        return kinds[:-1] + SUMMARY_EVENTS * len(item["summary"]) + kinds[-1:]
    return kinds


def collapsed(kinds: list[str]) -> list[str]:
    return [
        kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind or not kind.endswith(".delta")
    ]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def check_event_stream(
    result: dict[str, Any], status: str = "completed"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What every stream must be: `response.created` and `.in_progress` first, `response.<status>` last,
    sequence numbers 0, 1, 2, ...; each output item's events in order between its `added` and `done`, items
    one after another at the output_index the final response has them, with its id; the final response
    stored before the stream ended. Returns the events and finalResponse()."""
    events: list[dict[str, Any]] = result["events"]
    final: dict[str, Any] = result["final"]
    kinds = [event["type"] for event in events]
    assert kinds[:2] == list(LIFECYCLE) and kinds[-1] == f"response.{status}", kinds
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert {event["response"]["id"] for event in events if "response" in event} == {final["id"]}
    assert [events[0]["response"]["status"], events[-1]["response"]["status"]] == ["in_progress", status]
    assert final["status"] == status
    position = 2
    for index, item in enumerate(final["output"]):
        mine = [event for event in events if event.get("output_index") == index]
        assert mine == events[position : position + len(mine)], f"item {index}'s events are not together"
        position += len(mine)
        assert collapsed([event["type"] for event in mine]) == expected_events(item)
        added, done = mine[0], mine[-1]
        assert added["item"]["type"] == done["item"]["type"] == item["type"]
        assert added["item"]["id"] == done["item"]["id"] == item["id"]
        # the item the bound cut short ends incomplete, as the response does; every other one completed
        last = index == len(final["output"]) - 1
        ended = "incomplete" if status == "incomplete" and last else "completed"
        assert added["item"]["status"] == "in_progress" and done["item"]["status"] == ended == item["status"]
        assert all(event["item_id"] == item["id"] for event in mine[1:-1])
        assert all(event["content_index"] == 0 for event in mine if "content_index" in event)
    assert position == len(events) - 1  # nothing but the response's end after the last item
    assert result["retrieved"] == unparsed(final)  # stored before response.completed went out
    return events, final


def check_reasoning(events: list[dict[str, Any]], final: dict[str, Any]) -> None:
    """The reasoning item: its deltas make the text its `.done` event and the final response carry (one
    sample; several: the vote's winner, see the stream_high_effort test), its summary streamed as it is."""
    reasoning = final["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["content"][0]["type"] == "reasoning_text"
    (done,) = of_type(events, "response.reasoning_text.done")
    assert done["text"] == reasoning["content"][0]["text"] != ""
    summaries = [summary["text"] for summary in reasoning["summary"]]
    assert [event["text"] for event in of_type(events, "response.reasoning_summary_text.done")] == summaries
    assert "".join(
        event["delta"] for event in of_type(events, "response.reasoning_summary_text.delta")
    ) == "".join(summaries)
    for summary in summaries:  # extracted from the reasoning, never invented
        assert summary.rstrip("…") in done["text"]


def test_stream(node_run: NodeRun) -> None:
    result = node_run.scenario("stream")
    events, final = check_event_stream(result)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    check_reasoning(events, final)
    streamed = "".join(event["delta"] for event in of_type(events, "response.reasoning_text.delta"))
    assert streamed == final["output"][0]["content"][0]["text"]  # one sample: what was streamed
    assert final["output"][0]["summary"] == []  # none asked for
    deltas = of_type(events, "response.output_text.delta")
    text = "".join(event["delta"] for event in deltas)
    assert text == final["output_text"] == message_text(final) != ""
    assert [event["text"] for event in of_type(events, "response.output_text.done")] == [text]
    # the helper's own accumulation: each output_text.delta's snapshot is the text so far
    assert len(result["snapshots"]) == len(deltas)
    assert result["snapshots"] == [text[: len(snapshot)] for snapshot in result["snapshots"]]
    assert result["snapshots"][-1] == text
    check_usage(node_run, final)
    billed_once(node_run, final)


def test_stream_high_effort_with_a_summary(node_run: NodeRun) -> None:
    """On the deliberate tier: five samples, extensions to the 1,024-token floor and a vote; the stream's
    reasoning `.done` event and the final response carry the winner's reasoning. On the fast tier the effort
    is no more than a hint: one answer, no depth."""
    result = node_run.scenario("stream_high_effort")
    events, final = check_event_stream(result)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    check_reasoning(events, final)
    assert final["output"][0]["summary"] and final["output"][0]["summary"][0]["type"] == "summary_text"
    text = "".join(event["delta"] for event in of_type(events, "response.output_text.delta"))
    assert text == final["output_text"] != ""
    depth = check_usage(node_run, final, effort="high")
    if node_run.deliberate:
        assert depth["extensions"] > 0 and 0 <= depth["agreement"] <= 1  # the engine reasons under the floor
    billed_once(node_run, final)


def test_stream_function_call(node_run: NodeRun) -> None:
    result = node_run.scenario("stream_function_call")
    events, final = check_event_stream(result)
    assert [item["type"] for item in final["output"]] == ["reasoning", "function_call"]
    call = final["output"][1]
    assert call["name"] == "get_weather" and call["call_id"] and call["status"] == "completed"
    assert set(json.loads(call["arguments"])) == {"city", "unit"}
    deltas = of_type(events, "response.function_call_arguments.delta")
    assert "".join(event["delta"] for event in deltas) == call["arguments"]
    (done,) = of_type(events, "response.function_call_arguments.done")
    assert (done["arguments"], done["name"]) == (call["arguments"], "get_weather")
    # the helper's accumulation of the arguments
    assert len(result["argument_snapshots"]) == len(deltas)
    assert result["argument_snapshots"][-1] == call["arguments"]
    assert final["output_text"] == ""  # no message
    check_usage(node_run, final)
    billed_once(node_run, final)


def test_function_call_round_trip(node_run: NodeRun) -> None:
    result = node_run.scenario("function_call_round_trip")
    first, second = result["first"], result["second"]
    calls = [item for item in first["output"] if item["type"] == "function_call"]
    assert len(calls) == 1, first["output"]
    call = calls[0]
    assert call["name"] == "get_weather" and call["call_id"] and call["status"] == "completed"
    assert set(json.loads(call["arguments"])) == {"city", "unit"}
    assert second is not None
    assert second["previous_response_id"] == first["id"] != second["id"]
    assert second["status"] == "completed"
    assert second["output_text"] or any(item["type"] == "function_call" for item in second["output"])
    # the stored conversation (question, call) went before the call's output
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    for response in (first, second):
        check_usage(node_run, response)
        billed_once(node_run, response)


def test_a_stream_stopped_by_its_bound(node_run: NodeRun) -> None:
    """max_output_tokens 16: on the fast tier the helper ends with `response.incomplete` and finalResponse()
    resolves with it; on the deliberate tier the bound is under the depth floor, a 400 naming the field."""
    result = node_run.results["stream_incomplete"]
    if node_run.deliberate:
        assert not result["ok"]
        error = result["error"]
        assert (error["name"], error["status"]) == ("BadRequestError", 400)
        assert (error["code"], error["param"]) == ("max_tokens_below_depth_floor", "max_output_tokens")
        return
    _, final = check_event_stream(node_run.scenario("stream_incomplete"), status="incomplete")
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["usage"]["output_tokens"] == 16
    check_usage(node_run, final)
    billed_once(node_run, final)


@pytest.mark.parametrize("model", MODELS)
def test_an_engine_that_dies_mid_stream_rejects_the_stream(
    start_gateway: StartGateway, tmp_path: Path, node: Node, model: str
) -> None:
    """The gateway ends the stream with an `error` event (then `response.failed`): the Node SDK's helper
    throws it as an APIError with the gateway's code, and finalResponse() rejects with it: no clean end."""
    with engine(zero_latency=False, itl_s=0.001, die_after_chunks_rate=1.0, die_after_chunks=4) as url:
        gateway = keyed_gateway(start_gateway, url, tmp_path, deliberation={})
        key = new_key(gateway, limits={"fast": README_LIMITS, "deliberate": README_LIMITS})
        result = node.run(gateway, str(key["secret"]), model, ["stream_dies"])["stream_dies"]
    assert result["ok"], result
    events = result["events"]
    assert [event["type"] for event in events[:2]] == list(LIFECYCLE)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert not {"response.completed", "response.failed"} & {event["type"] for event in events}
    thrown = result["thrown"]
    assert thrown is not None and thrown["name"] == "APIError" and thrown["code"] == "engine_error"
    assert result["final_response"] == thrown
    exchange = gateway.recorder.wait_for(request_id(events[0]["response"]), timeout=60)
    assert exchange.outcome is Outcome.ENGINE_FAILED and exchange.endpoint == "responses"
