"""Structured output and tools (``response_format``, ``tools``, ``tool_choice``) through the real gateway and the
real CPU engine (``transformers serve``), driven with the official ``openai`` client; the gateway's validator of
answers unit-tested on real JSON.

The CPU engine honours ``tools`` (rendered by the model's chat template) but not ``response_format`` or
``tool_choice``: those are 400s naming the field and the engine. The tiny model cannot write JSON, so the path of
an answer that breaks its schema is tested for real against an engine entry that *declares* json_schema (the
same CPU engine, configured as if it constrained its decoding; it ignores the constraint, as any engine whose
constraint does not hold would): its answer is checked and refused. The success path of the check is the unit
test on real JSON (SGLang's constrained decoding is what produces it in production; no SGLang here).
"""

import json
import shutil

import httpx
import openai
import pytest

from crawl2serve.serving.engines import EngineConfig, SGLangEngine, TransformersCpuEngine
from crawl2serve.serving.engines.base import FEATURES, JSON_OBJECT, JSON_SCHEMA, TOOLS
from crawl2serve.serving.gateway.logstore import read_rows
from crawl2serve.serving.gateway.schemas import ChatRequest
from crawl2serve.serving.gateway.structured import (
    OutputContract,
    ToolCallDeltas,
    ToolContract,
    capable_engines,
    needed_features,
)
from crawl2serve.serving.gateway.tokens import TokenCounter
from tests.serving.helpers import metric, start_gateway

# A chat template that renders the function definitions before the messages (most instruct models' do, in
# their own markup); the tiny model's own plain template renders the messages' text only.
TOOLS_TEMPLATE = (
    "{% if tools %}Functions: {{ tools | tojson }}\n{% endif %}"
    "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city today",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
STRICT_WEATHER = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "The json module"}]


@pytest.fixture(scope="module")
def tools_model(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tools_model") / "merged"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module")
def caller_model(tools_model, tmp_path_factory):
    """The tools model with a response template (``tokenizer_config.json``) that reads all it writes as one call
    of ``get_weather``, its text the arguments: ``transformers serve`` then answers with tool calls, parsed by
    transformers itself, as it does for a Qwen model's ``<tool_call>`` markup."""
    folder = tmp_path_factory.mktemp("caller_model") / "merged"
    shutil.copytree(tools_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["response_template"] = {
        "start_anchor_pattern": r"\Z",
        "fields": {
            "tool_calls": {
                "content": "text",
                "repeats": True,
                "transform": {"type": "function", "function": {"name": "get_weather", "arguments": "{content}"}},
            }
        },
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, cpu_engine, tiny_model, tools_model, caller_model):
    """Version 1: the tiny model (plain template); 2: the same weights with a template that renders tools; 4: the
    same, answering tool calls; all on the CPU engine as it is. Versions 3 and 5: the tiny model and the tool
    caller on an entry of the same engine declaring every feature."""
    gw = start_gateway(
        tmp_path_factory.mktemp("structured"),
        [("primary", cpu_engine.url), ("declared", cpu_engine.url)],
        tiny_model,
        versions={"2": tools_model, "3": tiny_model, "4": caller_model, "5": caller_model},
        served_by={"1": ["primary"], "2": ["primary"], "3": ["declared"], "4": ["primary"], "5": ["declared"]},
        features={"declared": list(FEATURES)},
    )
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)


def _row(gateway, request_id: str) -> dict:
    return next(r for r in read_rows(gateway.settings.log_dir)[0] if r["request_id"] == request_id)


# -- through the gateway and the CPU engine ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "asked,param,says",
    [
        ({"response_format": {"type": "json_object"}}, "response_format", "response_format json_object"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}},
            "response_format",
            "response_format json_schema",
        ),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice", "tool_choice 'required'"),
        ({"tools": [STRICT_WEATHER]}, "tools", "strict function 'get_weather'"),
    ],
)
def test_what_the_cpu_engine_cannot_honour_is_a_400_naming_the_field_and_the_engine(
    client, gateway, asked, param, says
):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="crawl2serve@2", messages=ASK, max_tokens=4, **asked)
    error = err.value.body
    assert (error["code"], error["param"]) == ("unsupported_parameter", param), error
    assert says in error["message"] and "primary (cpu)" in error["message"], error["message"]
    row = _row(gateway, err.value.response.headers["x-request-id"])
    assert (row["status"], row["error"], row["engine"]) == (400, "unsupported_parameter", "")  # no engine called


def test_plain_text_format_is_served(client):
    answer = client.chat.completions.create(
        model="crawl2serve@1", messages=ASK, max_tokens=4, response_format={"type": "text"}
    )
    assert answer.choices[0].message.content and answer.choices[0].message.tool_calls is None


def _counted(folder: str, body: dict) -> int:
    """The prompt tokens the gateway reserves for ``body`` (its counter, the version's tokenizer)."""
    req = ChatRequest.model_validate({"model": "crawl2serve", **body})
    return TokenCounter().count(folder, messages=req.engine_messages(), tools=req.engine_tools())


def test_tools_reach_the_engine_and_its_template(client, gateway, tools_model):
    """The engine's own prompt count grows by the rendered definitions: they reached the model's template; the
    gateway counts the same (its rate-limit reservation). A conversation with an earlier tool call and its
    result is served and counted alike."""
    plain = client.chat.completions.create(model="crawl2serve@2", messages=ASK, max_tokens=2)
    with_tools = client.chat.completions.create(
        model="crawl2serve@2", messages=ASK, max_tokens=2, tools=[WEATHER], tool_choice="auto"
    )
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 20, (plain.usage, with_tools.usage)
    assert _counted(tools_model, {"messages": ASK, "tools": [WEATHER]}) == with_tools.usage.prompt_tokens
    conversation = [
        {"role": "user", "content": "Weather in Lyon?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, clear"},
    ]
    answer = client.chat.completions.create(model="crawl2serve@2", messages=conversation, max_tokens=2, tools=[WEATHER])
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert _counted(tools_model, {"messages": conversation, "tools": [WEATHER]}) == answer.usage.prompt_tokens
    assert _row(gateway, answer.id)["status"] == 200


def test_the_engines_tool_calls_reach_the_client_whole_and_streamed(client, gateway):
    answer = client.chat.completions.create(model="crawl2serve@4", messages=ASK, max_tokens=8, tools=[WEATHER])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    row = _row(gateway, answer.id)
    assert json.loads(row["tool_calls"]) == [call.model_dump()] and row["output"] == ""

    stream = client.chat.completions.create(
        model="crawl2serve@4", messages=ASK, max_tokens=8, tools=[WEATHER], stream=True
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].function.name == "get_weather", chunks
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    row = _row(gateway, chunks[0].id)
    assert json.loads(row["tool_calls"])[0]["function"] == deltas[0].function.model_dump()
    assert row["status"] == 200


def test_tools_for_a_template_that_never_reads_them_are_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="crawl2serve@1", messages=ASK, max_tokens=2, tools=[WEATHER])
    assert (err.value.body["code"], err.value.body["param"]) == ("unsupported_parameter", "tools")
    assert "chat template never reads them" in err.value.body["message"]


def test_an_invalid_json_schema_is_a_400_before_any_engine(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="crawl2serve@3",
            messages=ASK,
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "person"}}},
        )
    body = err.value.body
    assert (body["code"], body["param"]) == ("invalid_json_schema", "response_format.json_schema.schema"), body


def test_an_answer_breaking_its_schema_is_a_502_and_its_row_says_so(client, gateway):
    """The tiny model's free text, from an engine that declared json_schema but did not constrain it."""
    before = metric(gateway.url, "c2s_gateway_structured_outputs_total", format="json_schema", outcome="invalid")
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model="crawl2serve@3",
            messages=ASK,
            max_tokens=6,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        )
    assert err.value.status_code == 502 and err.value.body["code"] == "output_schema_invalid", err.value.body
    assert "does not match the requested response_format (json_schema)" in err.value.body["message"]
    row = _row(gateway, err.value.response.headers["x-request-id"])
    assert (row["status"], row["error"], row["engine"], row["response_format"]) == (
        502,
        "output_schema_invalid",
        "declared",
        "json_schema",
    )
    assert row["output"] and row["completion_tokens"] > 0  # the refused text is kept for inspection
    after = metric(gateway.url, "c2s_gateway_structured_outputs_total", format="json_schema", outcome="invalid")
    assert after == before + 1


def test_a_tool_call_breaking_its_strict_function_is_a_502(client, gateway):
    """The tool caller's arguments (the tiny model's text, not JSON), from an engine that declared strict tools."""
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="crawl2serve@5", messages=ASK, max_tokens=8, tools=[STRICT_WEATHER])
    assert err.value.status_code == 502 and err.value.body["code"] == "output_schema_invalid", err.value.body
    assert "the arguments of 'get_weather' is not JSON" in err.value.body["message"]
    row = _row(gateway, err.value.response.headers["x-request-id"])
    assert (row["status"], row["error"]) == (502, "output_schema_invalid")
    assert json.loads(row["tool_calls"])[0]["function"]["name"] == "get_weather"


def test_a_stream_breaking_its_format_ends_with_an_error_event(client, gateway):
    """Relayed as it arrives, checked when it ends: the openai client raises at the error event, after the
    chunks; the row is a 502 output_schema_invalid."""
    stream = client.chat.completions.create(
        model="crawl2serve@3", messages=ASK, max_tokens=6, response_format={"type": "json_object"}, stream=True
    )
    chunks = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            chunks.append(chunk)
    assert "json_object" in str(err.value) and any(c.choices and c.choices[0].delta.content for c in chunks)
    row = _row(gateway, chunks[0].id)
    assert (row["status"], row["error"], row["stream"], row["response_format"]) == (
        502,
        "output_schema_invalid",
        True,
        "json_object",
    )
    # the raw stream: no finish chunk, the error event, then [DONE]
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={
            "model": "crawl2serve@3",
            "messages": ASK,
            "max_tokens": 3,
            "stream": True,
            "response_format": {"type": "json_object"},
        },
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "output_schema_invalid"


# -- units: the validator on real JSON, features, request shapes --------------------------------------------------
def test_the_answer_validator_on_real_json():
    person = OutputContract("json_schema", PERSON)
    assert person.problem('{"name": "Ada", "age": 36}') is None
    assert person.problem(json.dumps({"name": "Zoë 李", "age": 0})) is None
    assert "$.age" in person.problem('{"name": "Ada", "age": -1}')
    assert "'age' is a required property" in person.problem('{"name": "Ada"}')
    assert "Additional properties" in person.problem('{"name": "Ada", "age": 1, "x": 2}')
    assert "not JSON" in person.problem('{"name": "Ada", "age": ')  # cut off by max_tokens
    assert "not JSON" in person.problem('{"name": "Ada", "age": NaN}')
    nested = OutputContract(
        "json_schema",
        {"type": "object", "properties": {"people": {"type": "array", "items": PERSON, "minItems": 1}}},
    )
    assert nested.problem('{"people": [{"name": "A", "age": 1}]}') is None
    assert "$.people[1].age" in nested.problem('{"people": [{"name": "A", "age": 1}, {"name": "B", "age": "2"}]}')
    objects = OutputContract("json_object")
    assert objects.problem('{"any": ["thing", 1, null]}') is None
    assert "not an object" in objects.problem("[1, 2]")
    remote = OutputContract("json_schema", {"$ref": "https://example.invalid/person.json"})
    assert "could not be applied" in remote.problem("{}")  # never fetched


def test_the_tool_call_validator_on_real_json():
    contract = ToolContract.of(
        ChatRequest.model_validate(
            {
                "model": "crawl2serve",
                "messages": ASK,
                "tools": [STRICT_WEATHER, {"type": "function", "function": {"name": "f"}}],
            }
        )
    )

    def call(name, arguments):
        return {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}

    assert (
        contract.problem([call("get_weather", '{"city": "Lyon", "unit": "celsius"}'), call("f", "free text")]) is None
    )
    assert "$.unit" in contract.problem([call("get_weather", '{"city": "Lyon", "unit": "kelvin"}')])
    assert "'city' is a required property" in contract.problem([call("get_weather", "{}")])
    assert "not one of the request's functions" in contract.problem([call("get_time", "{}")])
    assert (
        ToolContract.of(ChatRequest.model_validate({"model": "crawl2serve", "messages": ASK, "tools": [WEATHER]}))
        is None
    )


def test_engines_declare_what_they_honour():
    cpu = TransformersCpuEngine(EngineConfig(name="cpu", backend="cpu")).features()
    assert cpu == {TOOLS}
    sglang = SGLangEngine(EngineConfig(name="g", backend="sglang")).features()
    assert sglang == {JSON_OBJECT, JSON_SCHEMA}
    with_parser = SGLangEngine(EngineConfig(name="g", backend="sglang", extra_args=["--tool-call-parser", "qwen"]))
    assert with_parser.features() == set(FEATURES)
    no_grammar = SGLangEngine(
        EngineConfig(name="g", backend="sglang", extra_args=["--grammar-backend=none", "--tool-call-parser", "qwen"])
    )
    assert no_grammar.features() == {TOOLS}


def test_a_request_goes_only_to_engines_honouring_what_it_needs():
    req = ChatRequest.model_validate(
        {
            "model": "crawl2serve",
            "messages": ASK,
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
            "tools": [WEATHER],
        }
    )
    needs = needed_features(req)
    assert set(needs) == {JSON_SCHEMA, TOOLS}
    models, missing = capable_engines(
        {"champion": "m", "primary": "m:v2", "fallback": "/v2"},
        {"champion": frozenset(FEATURES), "primary": frozenset({JSON_SCHEMA}), "fallback": frozenset({TOOLS})},
        needs,
    )
    assert models == {"champion": "m"} and missing == {"primary": [TOOLS], "fallback": [JSON_SCHEMA]}
    assert req.structured()["response_format"]["json_schema"]["schema"] == PERSON  # sent on as the client wrote it
    assert needed_features(ChatRequest.model_validate({"model": "crawl2serve", "messages": ASK})) == {}


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "p"}}},
            "response_format.json_schema.schema",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "messages.0.tool_calls.0.function.arguments",
        ),
        ({"messages": [{"role": "tool", "content": "18 C"}]}, "messages.0"),
    ],
)
def test_malformed_structured_requests_are_400s_naming_the_field(gateway, extra, param):
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "crawl2serve@2", "messages": ASK, **extra},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_streamed_tool_call_deltas_are_put_together():
    calls = ToolCallDeltas()
    calls.add([{"index": 0, "id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
    calls.add([{"index": 0, "function": {"arguments": '{"city": '}}])
    calls.add([{"index": 0, "function": {"arguments": '"Lyon"}'}}, {"index": 1, "id": "c1", "function": {"name": "f"}}])
    assert calls.calls() == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}},
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}},
    ]
