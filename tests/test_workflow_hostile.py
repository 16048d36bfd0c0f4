"""Hostile workflow files never run code and never exhaust memory or time; any text, any
bytes and any workflow-shaped document either load or raise WorkflowValidationError."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openintent.workflow import (
    DEFAULT_MAX_BYTES,
    WorkflowSpec,
    WorkflowValidationError,
    load_workflow,
)

HEAD = 'openintent: "1.0"\ninfo: {name: t}\n'
STEP = "workflow:\n  a: {assign: x}\n"


def refused(text: str | bytes, **limits: int) -> WorkflowValidationError:
    with pytest.raises(WorkflowValidationError) as caught:
        WorkflowSpec.from_string(text, "hostile.yaml", **limits)
    return caught.value


@pytest.mark.parametrize(
    "tagged",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:os.system ['touch {marker}']",
        "!!python/name:os.system ''",
        "!custom {marker}",
        "!!binary aGVsbG8=",
        "!!set {{a: null}}",
    ],
)
def test_tags_are_refused_and_never_run(tmp_path, tagged):
    marker = tmp_path / "ran"
    text = HEAD + "workflow:\n  a:\n    assign: x\n    initial_state: {v: " + tagged.format(
        marker=marker) + "}\n"
    error = refused(text)
    [problem] = error.problems
    assert (problem.line, problem.column) == (6, 24)
    assert "is not allowed" in problem.message
    assert not marker.exists()


def billion_laughs(levels: int = 10) -> str:
    lines = [HEAD.rstrip(), 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    lines.append(f"workflow:\n  a:\n    assign: x\n    initial_state: {{v: *l{levels - 1}}}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_in_bounded_time_and_memory():
    tracemalloc.start()
    started = time.process_time()
    try:
        error = refused(billion_laughs())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.process_time() - started < 5  # CPU time; about 0.05 s
    assert peak < 20 * 1024 * 1024  # expanded it would be billions of values
    [problem] = error.problems
    assert "billion laughs" in problem.message and "max_alias_nodes" in problem.message
    assert problem.line > 2 and problem.column > 1


def test_a_few_aliases_are_fine_and_the_limit_is_adjustable():
    text = HEAD + "defaults: &d {assign: x}\nworkflow:\n  a: *d\n  b: *d\n"
    with pytest.raises(WorkflowValidationError, match="unknown key 'defaults'"):
        WorkflowSpec.from_string(text)  # aliases pass; the extra key is what is wrong
    small = billion_laughs(3)  # 9 + 81 + 729 repeated values
    refused(small, max_alias_nodes=100)
    with pytest.raises(WorkflowValidationError, match="unknown key 'l0'"):
        WorkflowSpec.from_string(small, max_alias_nodes=10_000)


def test_a_self_referring_alias_is_refused():
    [problem] = refused(HEAD + "workflow: &w\n  a: [*w]\n").problems
    assert "refers to the value that contains it" in problem.message


def test_an_oversized_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(HEAD.encode() + b"#" * (DEFAULT_MAX_BYTES + 1))
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflow(path)
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (1, 1)
    assert "more than the limit of 1048576" in problem.message
    assert "max_bytes=" in problem.message
    error = refused(HEAD + STEP, max_bytes=10)
    assert "more than the limit of 10" in str(error)
    WorkflowSpec.from_string(HEAD + STEP, max_bytes=1000)


def test_deep_nesting_is_an_error_not_a_crash():
    started = time.process_time()
    [problem] = refused("[" * 300_000 + "]" * 300_000).problems  # refused before scanning
    assert (problem.line, problem.column) == (1, 101)
    assert time.process_time() - started < 2
    refused("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)))
    refused(HEAD + "workflow:\n  a:\n    assign: x\n    initial_state: "
            + "{a: " * 150 + "1" + "}" * 150 + "\n")


# ------------------------------------------------------------------ properties

KEYS = ["openintent", "info", "name", "coordinator", "id", "strategy", "agents", "guardrails",
        "type", "max_cost_usd", "workflow", "title", "assign", "depends_on", "constraints",
        "timeout", "retry", "tags", "outputs", "inputs", "requires_approval", "a", "b"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
    st.sampled_from(KEYS + ["1.0", "sequential", "string", "a.b", "budget"]),
    st.text(max_size=5),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=20,
)


def to_yaml(value: object, indent: int = 0) -> str:
    """A small YAML writer for the generated documents (flow style, quoted strings)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {to_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_yaml(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value != value:
        return ".nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


def loads_or_refuses(text: str | bytes) -> None:
    try:
        wf = WorkflowSpec.from_string(text, "h.yaml")
    except WorkflowValidationError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.line >= 1 and problem.column >= 1
    else:
        wf.to_portfolio_spec()  # what loads also builds


PROPERTY = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.text(max_size=200))
def test_random_text_loads_or_raises_workflow_validation_error(text):
    loads_or_refuses(text)


@PROPERTY
@given(st.binary(max_size=200))
def test_random_bytes_load_or_raise_workflow_validation_error(data):
    loads_or_refuses(data)


names = st.sampled_from(["a", "b", "c", "x", "a.b", "b.text", "c.n", "string", "integer"])
values = st.one_of(scalars, names, st.lists(names, max_size=3),
                   st.dictionaries(names, st.one_of(names, scalars), max_size=3))
STEP_FIELDS = ["title", "description", "assign", "depends_on", "constraints", "initial_state",
               "retry", "timeout", "tags", "requires_approval", "inputs", "outputs", "asign"]
steps = st.one_of(documents, st.fixed_dictionaries({}, optional=dict.fromkeys(STEP_FIELDS,
                                                                                values)))
guardrails = st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["budget", "timeout", "approval", "unknown"])},
    optional=dict.fromkeys(["max_cost_usd", "max_seconds", "require_for", "approvers"], values),
), max_size=2)
coordinators = st.one_of(documents, st.fixed_dictionaries(
    {"id": names},
    optional={"strategy": values, "agents": values, "max_concurrency": values,
              "guardrails": guardrails},
))
workflow_documents = st.fixed_dictionaries(
    {"openintent": st.sampled_from(["1.0", "2", 1.0]),
     "info": st.one_of(st.fixed_dictionaries({"name": scalars}), documents)},
    optional={"coordinator": coordinators, "agents": documents,
              "workflow": st.dictionaries(st.sampled_from(["a", "b", "c"]), steps, max_size=3)},
)


@pytest.mark.slow
@PROPERTY
@given(workflow_documents)
def test_workflow_shaped_documents_load_or_raise_workflow_validation_error(document):
    loads_or_refuses(to_yaml(document))
