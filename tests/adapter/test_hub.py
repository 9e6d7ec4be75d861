"""Hub round trip with the real huggingface_hub client against the local Hub-compatible server."""

from __future__ import annotations

import json
import uuid

import pytest
import torch
from architectures import HIDDEN, tiny_model
from huggingface_hub import HfApi, hf_hub_download
from peft import PeftModel
from reference import contract_hooks

from steering_adapter import adapter_from_vectors, save_adapter
from steering_adapter.adapter.cards import read_front_matter
from steering_adapter.adapter.hub import push_adapter

IDS = torch.tensor([[5, 17, 42, 9, 33, 70, 3]])


def _vectors():
    generator = torch.Generator().manual_seed(21)
    return {1: torch.randn(HIDDEN, generator=generator), 2: torch.randn(HIDDEN, generator=generator)}


def _expected(vectors, scale):
    model = tiny_model("llama")
    with contract_hooks(model, "model.layers", [{"vectors": vectors, "scale": scale}]), torch.no_grad():
        return model(IDS).logits


def _repo() -> str:
    return f"steering-org/adapter-{uuid.uuid4().hex[:8]}"


def test_push_adapter_and_load_by_repo_id(local_hub, tmp_path):
    vectors = _vectors()
    model = adapter_from_vectors(tiny_model("llama"), vectors, scale=-3.0, steering_metadata={"method": "rmd"})
    folder = save_adapter(model, tmp_path / "adapter")
    repo_id = _repo()
    url = push_adapter(folder, repo_id)
    assert repo_id in url
    files = set(HfApi().list_repo_files(repo_id))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= files

    expected = _expected(vectors, -3.0)
    loaded = PeftModel.from_pretrained(tiny_model("llama"), repo_id)
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, expected, atol=1e-5, rtol=1e-5)
    plain = tiny_model("llama")
    plain.load_adapter(repo_id, adapter_name="from_hub")
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS).logits, expected, atol=1e-5, rtol=1e-5)

    card = open(hf_hub_download(repo_id, "README.md")).read()
    front = read_front_matter(card)
    assert front["library_name"] == "peft" and "steering" in front["tags"]
    config = json.loads(open(hf_hub_download(repo_id, "adapter_config.json")).read())
    assert config["peft_type"] == "STEERING" and config["layers"] == [1, 2]


def test_peft_push_to_hub_round_trip(local_hub):
    vectors = _vectors()
    model = adapter_from_vectors(tiny_model("llama"), vectors, scale=2.0)
    repo_id = _repo()
    model.push_to_hub(repo_id)
    loaded = PeftModel.from_pretrained(tiny_model("llama"), repo_id)
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, _expected(vectors, 2.0), atol=1e-5, rtol=1e-5)


def test_missing_repo_and_missing_weights(local_hub, tmp_path):
    with pytest.raises(ValueError, match="Can't find 'adapter_config.json'"):
        PeftModel.from_pretrained(tiny_model("llama"), "steering-org/does-not-exist")
    api = HfApi()
    repo_id = _repo()
    api.create_repo(repo_id)
    model = adapter_from_vectors(tiny_model("llama"), _vectors())
    folder = save_adapter(model, tmp_path / "adapter")
    api.upload_file(
        path_or_fileobj=f"{folder}/adapter_config.json", path_in_repo="adapter_config.json", repo_id=repo_id
    )
    with pytest.raises(ValueError, match="has no adapter_model.safetensors"):
        PeftModel.from_pretrained(tiny_model("llama"), repo_id)


def test_push_refuses_non_adapter_folder(local_hub, tmp_path):
    with pytest.raises(ValueError, match="adapter_config.json is missing"):
        push_adapter(tmp_path, _repo())
