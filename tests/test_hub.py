"""The Hugging Face Hub, offline: from_pretrained by repo id (a stand-in hf_hub_download, and the real one on a
local cache laid out as huggingface_hub lays it out), push_to_hub and push_run against a stand-in HfApi (what is
uploaded: the files, the card), `axial-attention push`, the error without the extra, bad names.

(A local folder's round trip is tests/test_autoregressive.py's; here only what the Hub path adds to it.)"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.models import hub as model_hub
from axial_attention.models.pretrained import ModelFileError
from axial_attention.training.cli import main as cli
from axial_attention.training.hub import push_run, run_files

COMMIT_A, COMMIT_B = "a" * 40, "0123456789abcdef" * 2 + "01234567"
EXTRA = r"pip install 'torch-axial-attention\[hub\]'"

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


def tiny(seed: int = 0, num_classes=2) -> AutoregressiveAxialTransformer:
    torch.manual_seed(seed)
    return AutoregressiveAxialTransformer((1, 3, 2), 4, dim=8, heads=2, depth=1, num_classes=num_classes).eval()


def scores(model: AutoregressiveAxialTransformer) -> torch.Tensor:
    x = torch.randint(0, 4, (3, 1, 3, 2), generator=torch.Generator().manual_seed(1))
    return model.log_prob(x, torch.tensor([0, 1, 1]))


def no_hub(monkeypatch) -> None:
    """huggingface_hub as if it were not installed: its import fails."""
    for name in [n for n in sys.modules if n == "huggingface_hub" or n.startswith("huggingface_hub.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)


def hub_error(name: str, message: str = "from the stand-in") -> Exception:
    """One of huggingface_hub's errors (their constructors want an HTTP response, of a type that changed between
    releases: this builds one without)."""
    utils = pytest.importorskip("huggingface_hub.utils", reason="the Hub's errors are huggingface_hub's")
    cls = getattr(utils, name)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


# -- names: what is a folder, what is a repo id ---------------------------------------------------------------------
def test_a_folder_loads_as_it_is_without_huggingface_hub(tmp_path, monkeypatch):
    """Even a folder whose name reads as a repo id: an existing folder always wins, and needs no extra."""
    model = tiny()
    model.save_pretrained(tmp_path / "owner" / "name")
    no_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for given in ("owner/name", Path("owner/name"), tmp_path / "owner" / "name"):
        torch.testing.assert_close(scores(AutoregressiveAxialTransformer.from_pretrained(given)), scores(model))
    with pytest.raises(ValueError, match="revision='v1' is for a Hub repo, but name_or_folder owner/name is a local"):
        AutoregressiveAxialTransformer.from_pretrained("owner/name", revision="v1")


@pytest.mark.parametrize("given", ["no_such_folder", "./owner/name", "/nowhere/at/all", "a/b/c", "owner/na--me",
                                   "owner/", "owner/name.git", "-owner/name", "owner/" + "n" * 97, "o/n m"])
def test_a_name_that_is_neither_a_folder_nor_a_repo_id(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    no_hub(monkeypatch)  # decided without the Hub: no extra needed to be told
    with pytest.raises(FileNotFoundError, match=r"name_or_folder: .* is neither a folder here nor a Hub repo id"):
        AutoregressiveAxialTransformer.from_pretrained(given)


def test_a_path_is_never_a_repo_id_and_a_file_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    no_hub(monkeypatch)
    with pytest.raises(FileNotFoundError, match="neither a folder here nor a Hub repo id"):
        AutoregressiveAxialTransformer.from_pretrained(Path("owner/name"))
    tiny().save_pretrained(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="is a file; pass the folder that holds config.json"):
        AutoregressiveAxialTransformer.from_pretrained("run/model.safetensors")
    with pytest.raises(TypeError, match="name_or_folder must be a folder .* got int"):
        AutoregressiveAxialTransformer.from_pretrained(3)


def test_repo_ids_follow_huggingface_hubs_rules():
    """is_repo_id against huggingface_hub's own validator, the independent reference."""
    utils = pytest.importorskip("huggingface_hub.utils", reason="the reference is huggingface_hub's validate_repo_id")
    names = ["name", "owner/name", "Owner-1/na.me_2", "_x/y_", "a/b/c", "owner/na--me", "owner/na..me", "owner/",
             "/name", ".owner/name", "owner/name.", "owner/name.git", "owner/-name", "o w/n", "owner/" + "n" * 96,
             "owner/" + "n" * 97, "ünï/code", "x", "1/2", "", "owner\\name"]
    for name in names:
        try:
            utils.validate_repo_id(name)
            valid = True
        except utils.HFValidationError:
            valid = False
        assert model_hub.is_repo_id(name) == valid, name
        assert model_hub.is_repo_id(name, owner=True) == (valid and "/" in name), name


def test_without_the_extra_the_hub_paths_name_it(tmp_path, monkeypatch):
    model = tiny()
    run = model.save_pretrained(tmp_path / "run")
    no_hub(monkeypatch)
    with pytest.raises(ImportError, match=EXTRA):
        AutoregressiveAxialTransformer.from_pretrained("owner/name")
    with pytest.raises(ImportError, match=EXTRA):
        model.push_to_hub("owner/name")
    with pytest.raises(ImportError, match=EXTRA):
        push_run(run, "owner/name")


def test_without_the_extra_the_command_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    run = tiny().save_pretrained(tmp_path / "run")
    no_hub(monkeypatch)
    assert cli(["push", str(run), "owner/name"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("axial-attention push: error: the Hugging Face Hub needs huggingface_hub") and \
        "pip install 'torch-axial-attention[hub]'" in err and len(err.strip().splitlines()) == 1


# -- downloads: a stand-in hf_hub_download ---------------------------------------------------------------------------
@pytest.fixture
def stand_in_download(tmp_path, monkeypatch):
    """hf_hub_download serving a saved model from snapshots/<commit>/, recording every call."""
    huggingface_hub = pytest.importorskip("huggingface_hub", reason="the Hub path needs the [hub] extra")
    model = tiny(seed=3)
    snapshot = tmp_path / "stand-in" / "snapshots" / COMMIT_A
    model.save_pretrained(snapshot)
    calls = []

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.chdir(tmp_path)
    return model, calls, snapshot


def test_a_repo_id_is_downloaded_with_the_arguments_passed_through(stand_in_download, tmp_path):
    model, calls, _ = stand_in_download
    loaded = AutoregressiveAxialTransformer.from_pretrained("owner/name", revision="v1", cache_dir=tmp_path / "c",
                                                            local_files_only=True, token="hf_secret")
    torch.testing.assert_close(scores(loaded), scores(model))
    assert not loaded.training
    assert [c["filename"] for c in calls] == ["config.json", "model.safetensors"]
    for call in calls:
        assert call["repo_id"] == "owner/name" and call["cache_dir"] == tmp_path / "c"
        assert call["local_files_only"] is True and call["token"] == "hf_secret"
        assert call["library_name"] == "axial_attention"
    # the weights come from the commit the config came from, even if the branch moves in between
    assert [c["revision"] for c in calls] == ["v1", COMMIT_A]


def test_a_broken_download_names_the_repo(stand_in_download):
    _, _, snapshot = stand_in_download
    data = (snapshot / "model.safetensors").read_bytes()
    (snapshot / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"owner/name at revision 'v1' \(the Hub\): .*was it truncated"):
        AutoregressiveAxialTransformer.from_pretrained("owner/name", revision="v1")
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**config, "model_type": "AxialImageTransformer"}))
    with pytest.raises(ModelFileError, match=r"owner/name \(the Hub\): .*describes a model of type"):
        AutoregressiveAxialTransformer.from_pretrained("owner/name")


@pytest.mark.parametrize("error, raised, message", [
    ("RepositoryNotFoundError", FileNotFoundError, "'owner/name' is neither a folder here nor a model repository"),
    ("GatedRepoError", FileNotFoundError, "gated repository: accept its conditions"),
    ("RevisionNotFoundError", ValueError, "revision: owner/name has no revision 'v9'"),
    ("EntryNotFoundError", FileNotFoundError, "has no config.json: an axial_attention model repository holds"),
    ("LocalEntryNotFoundError", FileNotFoundError, "config.json is not in the Hub's cache"),
])
def test_the_hubs_errors_become_ones_that_say_what_is_missing(error, raised, message, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub", reason="the Hub path needs the [hub] extra")

    def hf_hub_download(*args, **kwargs):
        raise hub_error(error)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    with pytest.raises(raised, match=message):
        AutoregressiveAxialTransformer.from_pretrained("owner/name", revision="v9")


# -- downloads: the real hf_hub_download on a local cache ------------------------------------------------------------
def lay_out_cache(cache: Path, repo_id: str, refs: dict[str, str], models: dict[str, AutoregressiveAxialTransformer]
                  ) -> None:
    """The Hub's cache as huggingface_hub lays it out: models--owner--name/refs/<branch> holds a commit,
    snapshots/<commit>/ the files (plain files here; the real cache links them to blobs/)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for branch, commit in refs.items():
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(commit)
    for commit, model in models.items():
        model.save_pretrained(repo / "snapshots" / commit)


@pytest.fixture
def cache(tmp_path):
    pytest.importorskip("huggingface_hub", reason="the Hub path needs the [hub] extra")
    models = {COMMIT_A: tiny(seed=1), COMMIT_B: tiny(seed=2)}
    lay_out_cache(tmp_path / "cache", "owner/name", {"main": COMMIT_A, "v2": COMMIT_B}, models)
    return tmp_path / "cache", models


def test_local_files_only_reads_the_cache_by_branch_and_commit(cache, tmp_path, monkeypatch):
    cache_dir, models = cache
    monkeypatch.chdir(tmp_path)
    load = AutoregressiveAxialTransformer.from_pretrained
    for revision, commit in ((None, COMMIT_A), ("main", COMMIT_A), ("v2", COMMIT_B), (COMMIT_B, COMMIT_B)):
        loaded = load("owner/name", revision=revision, cache_dir=cache_dir, local_files_only=True)
        torch.testing.assert_close(scores(loaded), scores(models[commit]), rtol=0, atol=0)
    assert not torch.allclose(scores(models[COMMIT_A]), scores(models[COMMIT_B]))  # the two can be told apart
    with pytest.raises(FileNotFoundError, match=re.escape(f"owner/other: config.json is not in the Hub's cache "
                                                          f"(cache_dir {cache_dir})")):
        load("owner/other", cache_dir=cache_dir, local_files_only=True)


def test_hf_hub_offline_reads_the_cache_without_local_files_only(cache, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache_dir, models = cache
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # (read by the package at import)
    loaded = AutoregressiveAxialTransformer.from_pretrained("owner/name", revision="v2", cache_dir=cache_dir)
    torch.testing.assert_close(scores(loaded), scores(models[COMMIT_B]), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="is not in the Hub's cache"):
        AutoregressiveAxialTransformer.from_pretrained("owner/other", cache_dir=cache_dir)


# -- uploads: a stand-in HfApi ---------------------------------------------------------------------------------------
class StandInApi:
    """HfApi's calls that push_to_hub and push_run make, recorded; an upload is read while its folder exists."""

    def __init__(self, log: list, token=None):
        self.log = log
        log.append(("HfApi", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.log.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return type("RepoUrl", (str,), {"repo_id": repo_id if "/" in repo_id else "me/" + repo_id})(repo_id)

    def create_branch(self, repo_id, **kwargs):
        self.log.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = {p.name: p.read_bytes() for p in folder.iterdir()}
        self.log.append(("upload_folder", {**kwargs, "files": files}))
        return "https://hub.invalid/commit/1"

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            source = op.path_or_fileobj
            files[op.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.log.append(("create_commit", {"repo_id": repo_id, **kwargs, "files": files}))
        return "https://hub.invalid/commit/2"


@pytest.fixture
def api(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub", reason="the Hub path needs the [hub] extra")
    log: list = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: StandInApi(log, token))
    return log


def calls(log: list, name: str) -> list[dict]:
    return [kwargs for call, kwargs in log if call == name]


def card_of(text: bytes):
    from huggingface_hub import ModelCard

    return ModelCard(text.decode("utf-8"))


def test_push_to_hub_uploads_the_model_files_and_a_card(api, tmp_path):
    model = tiny()
    commit = model.push_to_hub("name", token="hf_write", private=True, revision="v2",
                               card_data={"license": "mit", "tags": ["digits"]}, description="Digits, tiny.")
    assert commit == "https://hub.invalid/commit/1"
    assert calls(api, "HfApi") == [{"token": "hf_write"}]
    assert calls(api, "create_repo") == [{"repo_id": "name", "private": True, "exist_ok": True, "repo_type": "model"}]
    assert calls(api, "create_branch") == [{"repo_id": "me/name", "branch": "v2", "exist_ok": True,
                                            "repo_type": "model"}]
    (upload,) = calls(api, "upload_folder")
    assert upload["repo_id"] == "me/name" and upload["revision"] == "v2"
    assert upload["commit_message"] == "Upload AutoregressiveAxialTransformer"
    assert sorted(upload["files"]) == ["README.md", "config.json", "model.safetensors"]
    for name, data in upload["files"].items():  # what was uploaded loads as the model
        (tmp_path / name).write_bytes(data)
    torch.testing.assert_close(scores(AutoregressiveAxialTransformer.from_pretrained(tmp_path)), scores(model))
    card = card_of(upload["files"]["README.md"])
    assert card.data.library_name == "axial_attention" and card.data.license == "mit"
    assert {"axial-attention", "pytorch", "digits"} <= set(card.data.tags)
    assert "Digits, tiny." in card.text and 'from_pretrained("me/name")' in card.text
    architecture = card.text.split("```json\n")[-1].split("```")[0]
    assert json.loads(architecture) == json.loads(json.dumps(model.config))
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in card.text


def test_push_to_hub_checks_its_arguments_before_the_hub(api):
    model = tiny()
    with pytest.raises(ValueError, match="repo_id must be a Hub repo id.*got 'a/b/c'"):
        model.push_to_hub("a/b/c")
    with pytest.raises(TypeError, match="repo_id must be a Hub repo id.*got PosixPath"):
        model.push_to_hub(Path("owner/name"))
    with pytest.raises(ValueError, match="revision must be a branch name"):
        model.push_to_hub("owner/name", revision="")
    with pytest.raises(TypeError, match="private must be True, False or None"):
        model.push_to_hub("owner/name", private="yes")
    assert api == []


# -- a run folder ----------------------------------------------------------------------------------------------------
TINY_RUN = ["--dim", "8", "--heads", "2", "--depth", "1", "--batch-size", "8", "--samples-per-row", "2",
            "--no-progress", "--device", "cpu", "--steps", "4", "--eval-every", "2", "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run of the trainer itself, so the card is built from what the trainer really writes."""
    out = tmp_path_factory.mktemp("run") / "digits-tiny"
    torch.set_num_threads(1)
    assert cli(["train", *TINY_RUN, "--out", str(out)]) == 0
    (out / ".model.safetensors.tmp").write_bytes(b"half a file")  # an atomic write caught mid-way
    return out


def test_push_run_uploads_the_run_but_its_training_state(run, api):
    results = json.loads((run / "results.json").read_text())
    commit = push_run(run, "owner/digits", token="hf_write", revision="v1")
    assert commit == "https://hub.invalid/commit/2"
    (upload,) = calls(api, "create_commit")
    trainer_wrote = {p.name for p in run.iterdir()}
    assert {"training_state.pt", ".model.safetensors.tmp", "samples.png", "curves.png"} <= trainer_wrote
    assert sorted(upload["files"]) == sorted(trainer_wrote - {"training_state.pt", ".model.safetensors.tmp"}
                                             | {"README.md"})
    for name in trainer_wrote & set(upload["files"]):
        assert upload["files"][name] == (run / name).read_bytes(), name
    assert upload["revision"] == "v1" and upload["repo_id"] == "owner/digits"
    assert upload["commit_message"] == "Upload the run digits-tiny"

    card = card_of(upload["files"]["README.md"])
    assert card.data.library_name == "axial_attention"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    (result,) = card.data.eval_results
    assert result.metric_type == "bits_per_dim" and result.dataset_name == "digits" and result.dataset_split == "test"
    assert result.metric_value == pytest.approx(results["test_bits_per_dim"], abs=1e-4)
    assert f"**{results['test_bits_per_dim']:.4f}** on {results['test_images_evaluated']:,} test items" in card.text
    assert "| steps | 4 |" in card.text and "| data set | digits |" in card.text
    assert "![samples](samples.png)" in card.text and "![curves](curves.png)" in card.text
    assert str(run) not in card.text  # the card says nothing of the machine it was pushed from
    assert "axial-attention sample owner/digits" in card.text


def test_push_run_can_take_the_training_state_and_hides_local_paths(run, api, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    results = json.loads((copy / "results.json").read_text())
    results["args"]["data"] = str(tmp_path / "home" / "someone" / "my-pictures")
    (copy / "results.json").write_text(json.dumps(results))
    assert "training_state.pt" in [f.name for f in run_files(copy, include_training_state=True)]
    push_run(copy, "owner/pictures", include_training_state=True, card_data={"license": "cc-by-4.0"})
    (upload,) = calls(api, "create_commit")
    assert "training_state.pt" in upload["files"]
    card = card_of(upload["files"]["README.md"])
    assert card.data.license == "cc-by-4.0"
    assert "| data set | my-pictures (a folder of images) |" in card.text and "someone" not in card.text


def test_push_run_refuses_a_broken_run_before_uploading(run, api, tmp_path):
    with pytest.raises(FileNotFoundError, match="run_folder: no folder"):
        push_run(tmp_path / "nothing", "owner/name")
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:100])
    with pytest.raises(ModelFileError, match="was it truncated"):
        push_run(broken, "owner/name")
    with pytest.raises(ValueError, match="repo_id must be a Hub repo id"):
        push_run(run, "owner/name/extra")
    assert api == []


def test_the_push_command(run, api, capsys):
    assert cli(["push", str(run), "owner/digits", "--private", "--revision", "v3", "--token", "hf_write"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert calls(api, "HfApi") == [{"token": "hf_write"}]
    assert calls(api, "create_repo")[0]["private"] is True
    assert calls(api, "create_branch")[0]["branch"] == "v3"
    assert calls(api, "create_commit")[0]["revision"] == "v3"
    api.clear()
    assert cli(["push", str(run), "owner/digits"]) == 0
    assert calls(api, "create_repo")[0]["private"] is None and calls(api, "create_branch") == []


def test_the_push_command_reports_a_refusal_in_one_line(run, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub", reason="the Hub path needs the [hub] extra")

    class Refusing(StandInApi):
        def create_repo(self, repo_id, **kwargs):
            raise hub_error("HfHubHTTPError", "401 Unauthorized: invalid token")

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: Refusing([], token))
    assert cli(["push", str(run), "owner/digits"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("axial-attention push: error: the Hub refused the upload to owner/digits: "
                           "401 Unauthorized: invalid token")


def test_a_pushed_run_loads_by_repo_id_and_samples_from_the_command_line(run, stand_in_download, tmp_path, capsys):
    """The round trip the card promises: `axial-attention sample owner/name` on what was pushed."""
    _, calls_made, snapshot = stand_in_download
    for name in ("config.json", "model.safetensors"):
        shutil.copy(run / name, snapshot / name)
    assert cli(["sample", "owner/name", "--num", "2", "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert (tmp_path / "s.png").is_file() and [c["filename"] for c in calls_made][-1] == "model.safetensors"
