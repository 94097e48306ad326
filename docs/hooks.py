"""mkdocs hooks: the pages generated from the code, so that they never drift from it (the CLI reference
from argparse, the config keys and each method's parameters from their field declarations, the zoo's
data sets and models from their registries, the reliability catalogue from tests/reliability)."""

from __future__ import annotations

import inspect
from pathlib import Path

from mkdocs.structure.files import File

from lcbench.cli import build_parser
from lcbench.core.config import RunConfig
from lcbench.core.fields import describe_fields
from lcbench.methods import METHODS, method_order
from lcbench.zoo.data import DATASETS
from lcbench.zoo.models import MODELS

REPO = Path(__file__).resolve().parents[1]


def _methods() -> list[str]:
    return [name for name in method_order() if name != "none"]


def on_config(config):
    """Each method's generated page in the nav, under Methods, in the registry's order."""
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Methods" in entry:
            entry["Methods"] += [{METHODS.get(n).title or n: f"methods/{n}.md"} for n in _methods()]
    return config


def on_files(files, config):
    pages = {
        "cli.md": _cli(),
        "config.md": _config_keys(),
        "reliability.md": _reliability(),
        **{f"methods/{name}.md": _method(name) for name in _methods()},
    }
    for path, content in pages.items():
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    """The registries' lists appended to the hand-written data set and model pages."""
    if page.file.src_uri == "datasets.md":
        return markdown + _datasets()
    if page.file.src_uri == "models.md":
        return markdown + _models()
    return markdown


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        text = "" if value is None else f"`{value}`" if isinstance(value, (int, float, bool)) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _fields(cls: type) -> str:
    rows = []
    for row in describe_fields(cls):
        choices = ", ".join(map(str, row["choices"])) if row["choices"] else ""
        rows.append({**row, "key": f"`{row['key']}`", "default": repr(row["default"]), "choices": choices})
    return _table(rows, ["key", "type", "default", "choices", "help"])


def _cli() -> str:
    parser = build_parser()
    parts = [
        "# Command line\n",
        "Generated from the `lcbench` command's own argument parser: what `lcbench COMMAND --help` prints.\n",
        f"```text\n{parser.format_help()}```\n",
    ]
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        parts.append(f"## lcbench {name}\n\n```text\n{sub.format_help()}```\n")
    return "\n".join(parts)


def _config_keys() -> str:
    return (
        "# Config keys\n\n"
        "Every key of a run's config (`lcbench list keys` prints the same; `lcbench list keys METHOD` a "
        "method's own parameters, listed on each [method's page](methods/index.md)). Set them in a YAML file "
        "or as `key=value` on the command line; nested sections with a dot (`tracking.mode=offline`, "
        "`pretrain.epochs=30`).\n\n" + _fields(RunConfig)
    )


def _search_space(cls) -> str:
    """What `lcbench search` tries for the method at its default parameters, and where it comes from."""

    def listed(optimizer: str) -> str:
        space = cls.search_space(cls.Params(), optimizer)
        return "; ".join(f"`{k}` in {v}" for k, v in space.items()) or "nothing of its own"

    sgd, adamw = listed("sgd"), listed("adamw")
    values = sgd if sgd == adamw else f"{sgd} (SGD); {adamw} (AdamW)"
    return (
        f"**Search space** (`lcbench search`, at the default parameters): {values}, plus the fine-tuning "
        f"lr x 0.25 to 4 where it trains. Source: {cls.search_source}.\n\n"
        if cls.search_source
        else ""
    )


def _method(name: str) -> str:
    cls = METHODS.get(name)
    module = inspect.getmodule(cls)
    doc = inspect.cleandoc(module.__doc__ or "")
    summary = cls.__dict__.get("summary", "")
    source = module.__name__.replace(".", "/") + ".py"
    return (
        f"# {cls.title or name} (`{name}`)\n\n"
        + (f"{summary}\n\n" if summary else "")
        + (f"**Operating range**: {cls.operating_range}.\n\n" if cls.operating_range else "")
        + _search_space(cls)
        + f"{doc}\n\n"
        + f"## Parameters\n\n`lcbench list keys {name}`; the code is `{source}`.\n\n"
        + _fields(cls.Params)
        + "\n## Run it\n\n```bash\n"
        + f"lcbench run stage=compress method={name} model=digits_vit dataset=digits\n```\n"
    )


def _datasets() -> str:
    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        inputs = (
            f"{spec.seq_len} tokens" if spec.is_text else f"{spec.in_chans}x{spec.img_size}x{spec.img_size}"
        )
        rows.append(
            {
                "name": f"`{name}`",
                "task": spec.task,
                "metric": spec.metric,
                "classes": spec.num_classes if spec.num_classes is not None else "from the folder",
                "inputs": inputs,
                "where to get it": spec.how_to_get,
            }
        )
    return "\n## Every data set\n\n" + _table(
        rows, ["name", "task", "metric", "classes", "inputs", "where to get it"]
    )


def _models() -> str:
    rows = [
        {"name": f"`{n}`", "library": MODELS.get(n).source, "what it is": MODELS.get(n).description}
        for n in MODELS.names()
    ]
    return (
        "\n## Every registered model\n\n"
        "Any timm model also works by its name (`model=vit_base_patch16_224`).\n\n"
        + _table(rows, ["name", "library", "what it is"])
    )


def _reliability() -> str:
    text = (REPO / "tests" / "reliability" / "README.md").read_text()
    return text.replace("# Reliability suite", "# Reliability", 1)
