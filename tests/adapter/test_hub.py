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
from safetensors.torch import load_file, save_file

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


def _saved_adapter(folder) -> str:
    return save_adapter(adapter_from_vectors(tiny_model("llama"), _vectors(), scale=-3.0), folder)


def _nan_vector(folder: str) -> str:
    tensors = load_file(f"{folder}/adapter_model.safetensors")
    tensors["base_model.model.model.layers.2.steering_vector"][5] = float("nan")
    save_file(tensors, f"{folder}/adapter_model.safetensors")
    return "steering vector for layer 2 contains NaN or Inf"


def _extra_tensor(folder: str) -> str:
    tensors = load_file(f"{folder}/adapter_model.safetensors")
    tensors["base_model.model.model.layers.1.mlp.lora_A.weight"] = torch.randn(2, HIDDEN)
    save_file(tensors, f"{folder}/adapter_model.safetensors")
    return "unexpected tensor 'base_model.model.model.layers.1.mlp.lora_A.weight'"


def _misspelt_key(folder: str) -> str:
    path = f"{folder}/adapter_config.json"
    with open(path) as handle:
        config = json.load(handle)
    config["scael"] = config.pop("scale")
    with open(path, "w") as handle:
        json.dump(config, handle)
    return "unknown key 'scael' (did you mean 'scale'?)"


def _zero_ablation(folder: str) -> str:
    path = f"{folder}/adapter_config.json"
    with open(path) as handle:
        config = json.load(handle)
    with open(path, "w") as handle:
        json.dump({**config, "mode": "ablate"}, handle)
    tensors = load_file(f"{folder}/adapter_model.safetensors")
    tensors["base_model.model.model.layers.1.steering_vector"] = torch.zeros(HIDDEN)
    save_file(tensors, f"{folder}/adapter_model.safetensors")
    return "'base_model.model.model.layers.1.steering_vector' (block 1) is zero or too small"


@pytest.mark.parametrize("breakage", [_nan_vector, _extra_tensor, _misspelt_key, _zero_ablation])
def test_push_refuses_what_a_loader_refuses_before_any_request(local_hub, tmp_path, breakage):
    """The safetensors file is checked as the loaders check it, and nothing reaches the Hub (no request at all)."""
    folder = _saved_adapter(tmp_path / "adapter")
    fragment = breakage(folder)
    with pytest.raises(ValueError) as caught:
        PeftModel.from_pretrained(tiny_model("llama"), folder)  # the loaders' verdict, for reference
    assert fragment in str(caught.value)
    requests = len(local_hub.requests)
    repo_id = _repo()
    with pytest.raises(ValueError) as caught:
        push_adapter(folder, repo_id)
    message = str(caught.value)
    assert fragment in message and folder in message and len(message.splitlines()) == 1, message
    assert len(local_hub.requests) == requests, local_hub.requests[requests:]
    assert repo_id not in local_hub.repo_ids()


def test_push_refuses_a_missing_folder_without_looking_it_up_as_a_repo(local_hub, tmp_path):
    requests = len(local_hub.requests)
    with pytest.raises(ValueError, match="is not a folder"):
        push_adapter(tmp_path / "no-such-folder", _repo())
    assert len(local_hub.requests) == requests
