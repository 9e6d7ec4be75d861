"""Tests for `LocalHub`, driven by the real `huggingface_hub` client through ``HF_ENDPOINT``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch
from hub_server import LocalHub, git_blob_oid
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file, save_file

CONFIG = {"steering_type": "additive", "layers": [2, 3]}


def _vectors() -> torch.Tensor:
    return torch.arange(12, dtype=torch.float32).reshape(3, 4)


@pytest.fixture
def api(local_hub: LocalHub) -> HfApi:
    return HfApi()


@pytest.fixture
def repo_id(api: HfApi) -> str:
    """A freshly created, uniquely named model repo."""
    return api.create_repo(f"tester/repo-{uuid.uuid4().hex[:10]}").repo_id


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    """A folder with a JSON config and a small safetensors file."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(CONFIG))
    save_file({"vectors": _vectors()}, folder / "adapter_model.safetensors")
    return folder


def test_endpoint_points_at_local_hub(local_hub: LocalHub) -> None:
    assert constants.ENDPOINT == local_hub.url
    assert not constants.is_offline_mode()


def test_create_repo(api: HfApi, local_hub: LocalHub) -> None:
    name = f"tester/create-{uuid.uuid4().hex[:10]}"
    url = api.create_repo(name)
    assert url.repo_id == name
    assert url.endpoint == local_hub.url
    assert name in local_hub.repo_ids()
    assert api.repo_exists(name)
    # New repos start with an initial commit holding .gitattributes, like on the Hub.
    assert api.list_repo_files(name) == [".gitattributes"]

    assert api.create_repo(name, exist_ok=True).repo_id == name
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(name)
    assert excinfo.value.response.status_code == 409


def test_create_repo_without_namespace_uses_local_user(api: HfApi) -> None:
    name = f"bare-{uuid.uuid4().hex[:10]}"
    assert api.create_repo(name).repo_id == f"local-user/{name}"
    assert api.whoami()["name"] == "local-user"


def test_upload_folder_roundtrip(api: HfApi, repo_id: str, adapter_dir: Path) -> None:
    commit = api.upload_folder(repo_id=repo_id, folder_path=adapter_dir, commit_message="Add adapter")

    assert sorted(api.list_repo_files(repo_id)) == [
        ".gitattributes",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    info = api.model_info(repo_id, files_metadata=True)
    assert info.sha == commit.oid
    sizes = {sibling.rfilename: sibling.size for sibling in info.siblings}
    assert sizes["adapter_model.safetensors"] == (adapter_dir / "adapter_model.safetensors").stat().st_size

    for filename in ("adapter_config.json", "adapter_model.safetensors"):
        downloaded = Path(hf_hub_download(repo_id, filename))
        assert downloaded.read_bytes() == (adapter_dir / filename).read_bytes()
    tensors = load_file(hf_hub_download(repo_id, "adapter_model.safetensors"))
    assert torch.equal(tensors["vectors"], _vectors())


def test_resolve_metadata_headers(api: HfApi, repo_id: str) -> None:
    content = b'{"a": 1}'
    commit = api.upload_file(path_or_fileobj=content, path_in_repo="sub/dir/config.json", repo_id=repo_id)

    metadata = get_hf_file_metadata(hf_hub_url(repo_id, "sub/dir/config.json"))
    assert metadata.commit_hash == commit.oid
    assert metadata.etag == git_blob_oid(content)
    assert metadata.size == len(content)
    assert metadata.xet_file_data is None


def test_file_exists(api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)

    assert api.file_exists(repo_id, "config.json")
    assert not api.file_exists(repo_id, "missing.json")
    assert not api.file_exists(repo_id, "config.json", revision="no-such-branch")
    assert not api.file_exists("tester/no-such-repo", "config.json")


def test_missing_file_raises_entry_not_found(repo_id: str) -> None:
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.json")


def test_missing_repo_raises_repository_not_found(api: HfApi) -> None:
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/no-such-repo", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("tester/no-such-repo")
    assert not api.repo_exists("tester/no-such-repo")


def test_missing_revision_raises_revision_not_found(api: HfApi, repo_id: str) -> None:
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")


def test_new_commit_moves_main_and_old_sha_keeps_old_content(api: HfApi, repo_id: str) -> None:
    first = api.upload_file(path_or_fileobj=b'{"version": 1}', path_in_repo="config.json", repo_id=repo_id)
    notes = api.upload_file(path_or_fileobj=b"old", path_in_repo="notes.txt", repo_id=repo_id)
    second = api.create_commit(
        repo_id=repo_id,
        operations=[
            CommitOperationAdd(path_in_repo="config.json", path_or_fileobj=b'{"version": 2}'),
            CommitOperationDelete(path_in_repo="notes.txt"),
        ],
        commit_message="Bump version",
    )
    assert second.oid != first.oid

    assert Path(hf_hub_download(repo_id, "config.json")).read_bytes() == b'{"version": 2}'
    assert Path(hf_hub_download(repo_id, "config.json", revision=first.oid)).read_bytes() == b'{"version": 1}'
    assert api.model_info(repo_id).sha == second.oid
    assert api.model_info(repo_id, revision=first.oid).sha == first.oid

    assert not api.file_exists(repo_id, "notes.txt")
    assert api.file_exists(repo_id, "notes.txt", revision=notes.oid)
    assert "notes.txt" not in api.list_repo_files(repo_id)
    assert "notes.txt" in api.list_repo_files(repo_id, revision=notes.oid[:7])  # short shas resolve too


def test_unchanged_files_are_not_recommitted(api: HfApi, repo_id: str) -> None:
    first = api.upload_file(path_or_fileobj=b"same", path_in_repo="same.txt", repo_id=repo_id)
    again = api.upload_file(path_or_fileobj=b"same", path_in_repo="same.txt", repo_id=repo_id)
    assert again.oid == first.oid


def test_snapshot_download(api: HfApi, repo_id: str, adapter_dir: Path, tmp_path: Path) -> None:
    first = api.upload_folder(repo_id=repo_id, folder_path=adapter_dir)
    api.upload_file(path_or_fileobj=b"extra", path_in_repo="nested/extra.txt", repo_id=repo_id)

    snapshot = Path(snapshot_download(repo_id))
    assert (snapshot / "nested" / "extra.txt").read_bytes() == b"extra"
    for filename in ("adapter_config.json", "adapter_model.safetensors"):
        assert (snapshot / filename).read_bytes() == (adapter_dir / filename).read_bytes()

    old_snapshot = Path(snapshot_download(repo_id, revision=first.oid, local_dir=tmp_path / "old"))
    assert sorted(p.name for p in old_snapshot.iterdir() if p.is_file()) == [
        ".gitattributes",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_default_xet_enabled_client_uploads_inline(
    api: HfApi, repo_id: str, adapter_dir: Path, local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with Xet enabled (the client's default when hf_xet is installed), nothing goes through LFS/Xet."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    first_request = len(local_hub.requests)

    api.upload_folder(repo_id=repo_id, folder_path=adapter_dir)
    downloaded = Path(hf_hub_download(repo_id, "adapter_model.safetensors", force_download=True))

    assert downloaded.read_bytes() == (adapter_dir / "adapter_model.safetensors").read_bytes()
    paths = [path for _, path in local_hub.requests[first_request:]]
    assert any(path.endswith("/preupload/main") for path in paths)
    assert not [path for path in paths if "xet" in path or ".git/info/lfs" in path]
