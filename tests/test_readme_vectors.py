"""README: the test vectors for verifying the agent's local answer are the script's, and they verify.

A POS written in another language is built against the README's vectors, so they must be exactly what
scripts/local_answer_vectors.py prints, and each case must give its stated verdict through the same checks
`AgentClient.verified_license()` runs (`pospal_client.verify_local_answer`; tests/clients/test_js.py runs
them through clients/js too).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pospal_client import AnswerRefused, verify_local_answer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import local_answer_vectors  # noqa: E402


def _readme_vectors() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- local-answer-vectors -->\n```json\n(.*?)\n```", text, re.S)
    assert match, "README has no local-answer-vectors block"
    return json.loads(match.group(1))


README = _readme_vectors()


def test_the_readme_vectors_are_the_scripts():
    printed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "local_answer_vectors.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert README == json.loads(printed)


@pytest.mark.parametrize(
    ("name", "case", "verdict"),
    local_answer_vectors.cases(README),
    ids=[c[0] for c in local_answer_vectors.cases(README)],
)
def test_each_readme_vector_gives_its_verdict(name, case, verdict):
    try:
        status = verify_local_answer(
            case["challenge"],
            case["answer"],
            trusted_keys=README["trusted_keys"],
            this_pc=case["this_pc"],
            now=datetime.fromtimestamp(case["now"], UTC),
        )
        got = "licensed" if status["licensed"] else "not_licensed"
    except AnswerRefused as exc:
        got = exc.code
    assert got == verdict


def test_the_readme_digest_and_signed_message_are_the_answers():
    from pospal_protocol.proof import answer_digest, proof_message

    assert answer_digest(README["answer"]) == README["digest"]
    assert proof_message(README["challenge"], README["digest"]).decode() == README["signed_message"]
