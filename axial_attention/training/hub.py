"""A run folder of `axial-attention train` onto the Hugging Face Hub as it is: `push_run`, `axial-attention push`.

One commit uploads every file of the folder (config.json and model.safetensors, the EMA weights that
`from_pretrained` loads; results.json, metrics.jsonl, samples.png / samples.gif, curves.png and whatever
else the user put there) with a README.md model card built from results.json (the data set, steps, test
bits/dim as the card's model-index, the samples and curves shown). Files are read in place, not copied.
Left out:
  training_state.pt   what only --resume needs: the raw weights, the EMA copy, AdamW's two moments, the
                      grad scaler and every rank's random state, about 4x model.safetensors (9.9 MB beside
                      2.4 MB for the digits run) and no use to someone loading the model; pass
                      include_training_state=True to share a run that others can resume;
  hidden files        `.name.tmp` files of an atomic write caught mid-way, editors' and OS's files;
  README.md           the card replaces it.
huggingface_hub (the [hub] extra) is imported when called, by models/hub.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..models import hub
from ..models.autoregressive import AutoregressiveAxialTransformer
from ..models.pretrained import CONFIG_NAME, WEIGHTS_NAME
from .checkpoints import METRICS_NAME, RESULTS_NAME, STATE_NAME
from .data import BUILT_IN
from .trainer import CURVES_NAME, SAMPLES_NAME

CARD_NAME = "README.md"
ANIMATION_NAME = Path(SAMPLES_NAME).with_suffix(".gif").name  # what a video run writes beside samples.png
# Arguments of a run that say where it ran, not what it is: left out of the card.
LOCAL_ARGS = ("out", "resume", "overwrite", "progress", "device")


def run_files(run: Path, include_training_state: bool = False) -> list[Path]:
    """The files of `run` that push_run uploads, relative to it (sorted): see the module's docstring."""
    skipped = {CARD_NAME} | (set() if include_training_state else {STATE_NAME})
    files = []
    for path in sorted(run.rglob("*")):
        relative = path.relative_to(run)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts) \
                and relative.as_posix() not in skipped:
            files.append(relative)
    return files


def _results(run: Path) -> dict[str, Any]:
    path = run / RESULTS_NAME
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"run_folder: {path} is not valid JSON ({error})") from None
    if not isinstance(results, dict):
        raise ValueError(f"run_folder: {path} holds a {type(results).__name__}, not the JSON object the trainer writes")
    return results


def data_name(data: Any) -> str:
    """The data set as a card shows it: a built-in one by name, a folder or file by its name only (the run records
    its absolute path, which says nothing to a reader and something about the machine it ran on)."""
    if data is None or data in BUILT_IN:
        return str(data or "unknown")
    kind = "an .npy array" if str(data).endswith(".npy") else "a folder of images"
    return f"{Path(str(data)).name} ({kind})"


def _training_section(results: dict[str, Any], model: AutoregressiveAxialTransformer) -> str:
    args = results.get("args") or {}
    rows = [("data set", data_name(args.get("data"))),
            ("items", " x ".join(map(str, model.image_shape)) + f" ({', '.join(('channels', *model.axis_names))}), "
                      f"{model.num_levels} levels"),
            ("status", results.get("status", "unknown"))]
    if "steps" in results:
        rows.append(("steps", f"{results['steps']:,}"))
    elif "steps" in args:
        rows.append(("steps", f"{args['steps']:,} planned (not finished: the weights are its last checkpoint's)"))
    if "batch_size" in args:
        rows.append(("batch size", str(args["batch_size"])))
    if "test_bits_per_dim" in results:
        bits = f"**{results['test_bits_per_dim']:.4f}**"
        if "test_images_evaluated" in results:
            bits += f" on {results['test_images_evaluated']:,} test items"
        if "uniform_bits_per_dim" in results:
            bits += f" (uniform: {results['uniform_bits_per_dim']:.3f})"
        rows.append(("test bits/dim", bits))
    if results.get("test_bits_per_frame"):
        rows.append(("test bits per frame", ", ".join(f"{b:.1f}" for b in results["test_bits_per_frame"])))
    if "train_images" in results:
        rows.append(("train / test items", f"{results['train_images']:,} / {results.get('test_images', 0):,}"))
    if "train_seconds_this_process" in results:
        rows.append(("training time", f"{results['train_seconds_this_process']:,.0f} s on "
                                      f"{results.get('world_size', 1)} process(es)"))
    if results.get("class_names"):
        rows.append(("classes (by label)", ", ".join(map(str, results["class_names"]))))
    shown = {k: data_name(v) if k == "data" else v for k, v in args.items() if k not in LOCAL_ARGS}
    return "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), "",
                      "<details><summary>The arguments of <code>axial-attention train</code></summary>", "",
                      "```json", json.dumps(shown, indent=2), "```", "", "</details>"])


def run_card(run: Path, repo_id: str, model: AutoregressiveAxialTransformer, files: list[Path],
             card_data: dict[str, Any] | None = None, description: str | None = None) -> Any:
    """The model card of run folder `run` as it will be in `repo_id`: huggingface_hub's ModelCard."""
    results = _results(run)
    names = {f.as_posix() for f in files}
    video = model.num_axes > 2
    sections = []
    if results:
        sections.append(("Training", _training_section(results, model)))
    pictures = [f"![samples]({name})" for name in (ANIMATION_NAME if video else None, SAMPLES_NAME) if name in names]
    if pictures:
        what = "clips, a row of frames each" if video else "images"
        rows = ", one row per class" if model.num_classes is not None and not video else ""
        sections.append(("Samples", f"Samples of this model ({what}{rows}), drawn by the trainer at the end of the "
                                    f"run:\n\n" + "\n\n".join(pictures)))
    if CURVES_NAME in names:
        sections.append(("Curves", f"Train and test bits/dim against steps ({METRICS_NAME} holds the figures):\n\n"
                                   f"![curves]({CURVES_NAME})"))
    labels = f", labels=torch.arange(8) % {model.num_classes}" if model.num_classes is not None else ""
    shape = ", ".join(map(str, model.image_shape))
    sections.append(("Sample", "\n".join([
        "```python", "import torch", "", f"samples = model.sample(8{labels})  # long (8, {shape}), in [0, "
        f"{model.num_levels})", "```", "", "or from the command line:", "", "```bash",
        f"axial-attention sample {repo_id} --num 20 --out samples.png", "```"])))
    sections.append(("Files", "\n".join(f"- `{name}`" for name in sorted(names | {CARD_NAME}))))
    eval_results = []
    if "test_bits_per_dim" in results:
        task = "video-generation" if video else "unconditional-image-generation"
        name = data_name((results.get("args") or {}).get("data"))
        eval_results.append(hub.import_hub().EvalResult(
            task_type=task, dataset_type=name, dataset_name=name, dataset_split="test",
            metric_type="bits_per_dim", metric_name="test bits/dim",
            metric_value=round(results["test_bits_per_dim"], 4)))
    kind = "videos" if video else "images"
    return hub.model_card(
        repo_id, type(model).__name__, model.config, sum(p.numel() for p in model.parameters()),
        description=description or (f"An Axial Transformer (Ho et al., 2019) over {kind} of "
                                    f"{' x '.join(map(str, model.image_shape[1:]))}, trained with `axial-attention "
                                    f"train`: exact likelihoods, cached sampling and completion."),
        sections=sections, tags=["axial-transformer", "autoregressive", "video-generation" if video else
                                 "image-generation"],
        pipeline_tag=None if video else "unconditional-image-generation", eval_results=eval_results,
        card_data=card_data)


def push_run(run_folder: str | os.PathLike[str], repo_id: str, *, token: str | bool | None = None,
             private: bool | None = None, revision: str | None = None, commit_message: str | None = None,
             include_training_state: bool = False, description: str | None = None,
             card_data: dict[str, Any] | None = None) -> Any:
    """Upload a run folder of `axial-attention train` (or of save_pretrained) to the Hub repo `repo_id` ("owner/name",
    or "name" under the token's account) in one commit, with a README.md model card built from its results.json.

    The model is loaded first (a folder whose model files are missing or broken is refused before anything is
    uploaded). Every file goes up but training_state.pt (`include_training_state=True` to add it: what --resume
    needs, about 4x the model's size) and hidden ones. `private`, `revision` (a branch, created if missing),
    `description` and `card_data` (more ModelCardData fields: license, datasets, ...) as for `push_to_hub`.
    Returns huggingface_hub's CommitInfo (a str: the commit's URL). Needs the [hub] extra."""
    if not isinstance(run_folder, (str, os.PathLike)):
        raise TypeError(f"run_folder must be a folder (str or os.PathLike), got {type(run_folder).__name__}")
    run = Path(run_folder)
    if not run.is_dir():
        raise FileNotFoundError(f"run_folder: no folder {run} (a run folder of `axial-attention train` holds "
                                f"{CONFIG_NAME}, {WEIGHTS_NAME}, {RESULTS_NAME}, ...)")
    hub.check_repo_id(repo_id)
    hub.import_hub()  # before the model is loaded: without the extra, say so first
    model = AutoregressiveAxialTransformer.from_pretrained(run)
    files = run_files(run, include_training_state)
    api, repo_id = hub.create_repo(repo_id, token=token, private=private, revision=revision)
    card = run_card(run, repo_id, model, files, card_data, description)
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=f.as_posix(), path_or_fileobj=str(run / f)) for f in files]
    operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=str(card).encode("utf-8")))
    return api.create_commit(repo_id, operations, repo_type="model", revision=revision,
                             commit_message=commit_message or f"Upload the run {run.resolve().name}")
