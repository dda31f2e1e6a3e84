"""pospal_protocol.errors.HTTP_STATUS is the one map of error codes to HTTP statuses, on both sides of the
wire."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import server
from agent.errors import ServerRefused
from agent.localapi.httpd import error_for
from pospal_protocol.errors import HTTP_STATUS, http_status


def server_api_errors() -> list[type]:
    """Every ApiError subclass the server defines (all its modules imported)."""
    from server.errors import ApiError

    for module in pkgutil.walk_packages(server.__path__, "server."):
        if ".migrations" not in module.name:
            importlib.import_module(module.name)
    found, todo = [], [ApiError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def test_every_server_error_takes_its_status_from_the_map():
    errors = server_api_errors()
    assert len(errors) >= 15
    for cls in errors:
        assert cls.status == HTTP_STATUS[cls.code], cls


def test_a_server_error_class_with_a_code_outside_the_map_fails_at_definition():
    from server.errors import ApiError

    with pytest.raises(TypeError, match="not in pospal_protocol.errors.HTTP_STATUS"):
        type("Invented", (ApiError,), {"code": "invented_code"})


@pytest.mark.parametrize("code", sorted(HTTP_STATUS))
def test_the_agent_passes_a_server_refusal_on_with_the_same_status(code):
    answer = error_for(ServerRefused(code, "refused"))
    assert (answer.status, answer.code) == (HTTP_STATUS[code], code)


def test_an_unknown_code_is_a_plain_400():
    assert http_status("something_new") == 400
