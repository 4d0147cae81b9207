"""``model.models`` entries that name a server: validation, secrets, and ``check`` (no server needed)."""

from __future__ import annotations

import pytest

from bench.llama_server import free_port
from config import ConfigErrors, load_config
from tests.conftest import run_bot


def write(tmp_path, entry: str):
    path = tmp_path / "config.yaml"
    path.write_text(f"model:\n  models:\n    - name: big\n{entry}")
    return path


@pytest.mark.parametrize(
    "entry",
    [
        "      path: models/x.gguf\n      endpoint: http://gpu:8080/v1\n",
        "      n_ctx: 4096\n",
    ],
)
def test_exactly_one_of_path_or_endpoint(tmp_path, entry):
    with pytest.raises(ConfigErrors) as errors:
        load_config(write(tmp_path, entry))
    assert str(errors.value) == "model.models.0.path: give exactly one of path (a GGUF file) or endpoint (a server)"


def test_server_keys_need_an_endpoint(tmp_path):
    with pytest.raises(ConfigErrors, match=r"model.models.0.endpoint: api_key, model and tokenizer apply only"):
        load_config(write(tmp_path, "      path: models/x.gguf\n      api_key: abcdef\n"))


def test_an_endpoint_entry_reads_its_key_from_the_environment(tmp_path):
    entry = (
        "      endpoint: http://gpu-box:8080/v1/\n      api_key: ${LLM_API_KEY}\n      model: name-on-the-server\n"
        "      n_ctx: 8192\n      tokenizer: models/big.gguf\n      max_concurrent: 8\n"
    )
    config = load_config(write(tmp_path, entry), env={"LLM_API_KEY": "sk-secret-value"})
    (configured,) = config.engine_settings().model.models
    remote = configured.remote
    assert remote is not None and configured.path is None and configured.n_ctx == 8192
    assert (remote.url, remote.api_key, remote.model, remote.max_concurrent) == (
        "http://gpu-box:8080/v1",
        "sk-secret-value",
        "name-on-the-server",
        8,
    )
    assert str(remote.tokenizer) == "models/big.gguf"
    assert "sk-secret-value" not in repr(configured) + repr(config)


def test_check_says_when_an_endpoint_does_not_answer(tmp_path):
    port = free_port()  # nothing listens there
    entry = f"      endpoint: http://127.0.0.1:{port}/v1\n"
    result = run_bot("check", "--config", str(write(tmp_path, entry)))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"model.models.0.endpoint: http://127.0.0.1:{port}/v1 does not answer: connection refused" in result.stdout
