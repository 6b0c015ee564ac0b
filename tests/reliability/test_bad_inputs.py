"""Bad inputs, tried as a new user would: every one ends in exactly one ``alignkit: error: `` line, exit
code 1 (click's code for errors; 2 is kept for usage errors), no traceback, and nothing written (the run
directory is never created).

``CASES`` is the single list behind both this test and the table in ``docs/errors.md``. After changing a
case or a message, regenerate the table with ``python tests/reliability/test_bad_inputs.py --write``: it
runs every case through the real CLI and rewrites the table between the markers in docs/errors.md
(without ``--write`` it prints the table).
``test_docs_table_matches_cases`` fails when the table and this list drift apart.
"""

from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from alignkit.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"


@dataclass
class Case:
    """One bad input: the recipe text (None: no recipe file), files to create under the case's folder,
    --set overrides applied after the tiny ones, further CLI arguments, and the documented fragment of
    the error line. ``{tmp}`` in any text stands for the case's folder."""

    id: str
    topic: str
    what: str
    expect: str
    recipe: str | None = "method: dpo\n"
    files: dict[str, str | bytes] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    needs_no_cuda: bool = False


GOOD_ROW = '{"prompt": "The film", "chosen": " was great", "rejected": " was bad"}\n'
ROWS = GOOD_ROW + '{"prompt": "A movie", "chosen": " I loved it", "rejected": " I hated it"}\n'
ROWS3 = ROWS + GOOD_ROW.replace("The film", "The plot")  # 3 prompts: 2 left to train on after one is held out
DATA = "preferences.source={tmp}/pairs.jsonl"
CHAT_ROW = ('{"prompt": [{"role": "user", "content": "The film?"}], "chosen": [{"role": "assistant", '
            '"content": "Great."}], "rejected": [{"role": "assistant", "content": "Bad."}]}\n')
LOSS_HEAD = (
    "from alignkit import register_loss\nfrom alignkit.losses import LossOutput, log_ratios\nimport torch\n"
)


def loss_plugin(name: str, body: str, signature: str = "logps, *, beta") -> str:
    return (LOSS_HEAD + f"@register_loss({name!r})\ndef loss({signature}):\n"
            "    c, r = log_ratios(logps)\n" + "".join(f"    {line}\n" for line in body.splitlines()))


CASES = [
    # ---- recipe files: syntax, keys, types, ranges, duplicates, non-finite numbers
    Case(
        "recipe-missing",
        "recipe",
        "recipe file does not exist",
        "missing.yaml: recipe file not found",
        recipe=None,
    ),
    Case(
        "yaml-syntax",
        "recipe",
        "unclosed brace",
        "malformed YAML (line 3, column 1)",
        recipe="method: dpo\ndpo: {beta: 0.1\n",
    ),
    Case(
        "yaml-not-mapping",
        "recipe",
        "a YAML list instead of a mapping",
        "a recipe must be a YAML mapping, got list",
        recipe="- dpo\n- ppo\n",
    ),
    Case(
        "yaml-python-tag",
        "recipe",
        "a `!!python/object` tag (safe_load only: never constructed)",
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        recipe="method: !!python/object/apply:os.system ['echo hi']\n",
    ),
    Case(
        "duplicate-key",
        "recipe",
        "the same top-level key twice",
        "line 3: duplicate key 'seed' (first set on line 2)",
        recipe="method: dpo\nseed: 1\nseed: 2\n",
    ),
    Case(
        "duplicate-nested-key",
        "recipe",
        "the same key twice inside a section",
        "line 4: duplicate key 'beta' (first set on line 3)",
        recipe="method: dpo\ndpo:\n  beta: 0.1\n  beta: 0.5\n",
    ),
    Case("missing-method", "recipe", "no `method:`", "method: required key is missing", recipe="name: x\n"),
    Case(
        "unknown-key",
        "recipe",
        "misspelled top-level key",
        "seeed: unknown key (did you mean 'seed'?)",
        recipe="method: dpo\nseeed: 1\n",
    ),
    Case(
        "unknown-section-key",
        "recipe",
        "misspelled key in a method section",
        "dpo.betta: unknown key (did you mean 'beta'?)",
        recipe="method: dpo\ndpo: {betta: 0.1}\n",
    ),
    Case(
        "schedule-unknown",
        "recipe",
        "a schedule alignkit does not run (`lr_scheduler_type: polynomial`)",
        "dpo.lr_schedule: must be one of linear_to_tenth, linear, cosine, constant, constant_with_warmup, "
        "got 'polynomial'",
        recipe="method: dpo\ndpo: {lr_scheduler_type: polynomial}\n",
    ),
    Case(
        "warmup-twice",
        "recipe",
        "a warm-up in steps and as a ratio",
        "dpo.warmup_ratio: warmup_steps (5) is also given; give one (or warmup_steps: 0)",
        recipe="method: dpo\ndpo: {warmup_steps: 5, warmup_ratio: 0.1}\n",
    ),
    Case(
        "wrong-type-int",
        "recipe",
        "text where an integer belongs",
        "eval.batch_size: expected an integer, got str 'many'",
        recipe="method: dpo\neval: {batch_size: many}\n",
    ),
    Case(
        "wrong-type-bool",
        "recipe",
        "text where true/false belongs",
        "dpo.reference_free: expected true or false, got str 'maybe'",
        recipe="method: dpo\ndpo: {reference_free: maybe}\n",
    ),
    Case(
        "section-not-mapping",
        "recipe",
        "a number where a section belongs",
        "dpo: expected a mapping, got float 0.1",
        recipe="method: dpo\ndpo: 0.1\n",
    ),
    Case(
        "out-of-range",
        "recipe",
        "negative beta",
        "dpo.beta: must be > 0, got -1.0",
        recipe="method: dpo\ndpo: {beta: -1}\n",
    ),
    Case(
        "nonfinite-inf",
        "recipe",
        "`lr: .inf`",
        "dpo.lr: must be a finite number, got inf",
        recipe="method: dpo\ndpo: {lr: .inf}\n",
    ),
    Case(
        "nonfinite-nan",
        "recipe",
        "`beta: .nan`",
        "dpo.beta: must be a finite number, got nan",
        recipe="method: dpo\ndpo: {beta: .nan}\n",
    ),
    Case(
        "nonfinite-in-list",
        "recipe",
        "`.inf` inside a list of numbers",
        "eval.temperatures[1]: must be a finite number, got inf",
        recipe="method: dpo\neval: {temperatures: [0.5, .inf]}\n",
    ),
    Case(
        "inconsistent",
        "recipe",
        "prompt_max_tokens < prompt_min_tokens",
        "task.prompt_max_tokens: must be >= prompt_min_tokens (5)",
        recipe="method: dpo\ntask: {prompt_min_tokens: 5, prompt_max_tokens: 3}\n",
    ),
    Case(
        "bad-choice",
        "recipe",
        "unsupported dtype",
        "model.dtype: must be one of float32, bfloat16, float16, got 'float64'",
        sets=["model.dtype=float64"],
    ),
    Case(
        "quantized-no-lora",
        "recipe",
        "4-bit weights without LoRA",
        "model.lora: quantized (4-bit/8-bit) weights cannot",
        sets=["model.load_in_4bit=true"],
    ),
    Case(
        "prompt-longer-than-context",
        "recipe",
        "max_prompt_length >= max_length",
        "model.max_prompt_length: must be < max_length (48)",
        sets=["model.max_prompt_length=48"],
    ),
    Case(
        "plugins-not-list",
        "recipe",
        "`plugins:` as a single string",
        "plugins: expected a list of modules or paths",
        recipe="method: dpo\nplugins: my_loss.py\n",
    ),
    # ---- --set overrides
    Case(
        "set-no-equals",
        "--set",
        "`--set dpo.beta`",
        "--set dpo.beta: expected KEY.PATH=VALUE",
        sets=["dpo.beta"],
    ),
    Case(
        "set-empty-key",
        "--set",
        "`--set dpo..beta=1`",
        "--set dpo..beta=1: expected KEY.PATH=VALUE, e.g. dpo.beta=0.5",
        sets=["dpo..beta=1"],
    ),
    Case(
        "set-unknown-key",
        "--set",
        "`--set dpo.betta=0.5`",
        "dpo.betta: unknown key (did you mean 'beta'?)",
        sets=["dpo.betta=0.5"],
    ),
    Case("set-unknown-section", "--set", "`--set nosuch.x=1`", "nosuch: unknown key", sets=["nosuch.x=1"]),
    Case(
        "set-not-mapping",
        "--set",
        "`--set model.name_or_path.x=1` (a text value)",
        "--set model.name_or_path.x=1: name_or_path is not a mapping",
        sets=["model.name_or_path.x=1"],
    ),
    Case(
        "set-wrong-type",
        "--set",
        "`--set seed.x=1` (seed takes a number)",
        "seed: expected an integer, got dict",
        sets=["seed.x=1"],
    ),
    Case(
        "set-duplicate-key",
        "--set",
        "a duplicate key inside a --set value",
        "--set dpo.loss_params={a: 1, a: 2}: line 1: duplicate key 'a'",
        sets=["dpo.loss_params={a: 1, a: 2}"],
    ),
    # ---- registered names
    Case(
        "unknown-method",
        "names",
        "`method: dop`",
        "method: unknown method 'dop'; did you mean 'dpo'?",
        recipe="method: dop\n",
    ),
    Case(
        "unknown-loss",
        "names",
        "`dpo.loss: sigmiod`",
        "dpo.loss: unknown loss 'sigmiod'; did you mean 'sigmoid', 'simpo', 'sigmoid_norm'?",
        sets=["dpo.loss=sigmiod"],
    ),
    Case(
        "unknown-reward",
        "names",
        "`gold_reward: imdb-sentimnet`",
        "gold_reward: unknown reward 'imdb-sentimnet'; did you mean 'imdb-sentiment'?",
        sets=["gold_reward=imdb-sentimnet"],
    ),
    Case(
        "gold-options-unexpected",
        "names",
        "`gold_reward_options` for a reward that takes none",
        "gold_reward_options: reward 'imdb-sentiment' takes no options",
        sets=["gold_reward_options.model=x"],
    ),
    Case(
        "gold-classifier-missing",
        "names",
        "`hf-classifier` on a local folder that does not exist",
        "gold_reward_options.model: cannot load '{tmp}/no_classifier' as a local folder: it does not exist",
        sets=["gold_reward=hf-classifier", "gold_reward_options.model={tmp}/no_classifier"],
    ),
    Case(
        "gold-classifier-label",
        "names",
        "`hf-classifier` label the model does not have",
        "gold_reward_options.label: the classifier has no label 'happy' (its labels: NEGATIVE, POSITIVE)",
        files={"clf/config.json": '{"id2label": {"0": "NEGATIVE", "1": "POSITIVE"}}'},
        sets=[
            "gold_reward=hf-classifier",
            "gold_reward_options.model={tmp}/clf",
            "gold_reward_options.label=happy",
        ],
    ),
    Case(
        "gold-classifier-judge",
        "names",
        "`eval.judge: hf-classifier` while the gold reward is another",
        "eval.judge: hf-classifier takes its settings from gold_reward_options, so it can judge only as the "
        "gold_reward itself",
        sets=["eval.judge=hf-classifier"],
    ),
    Case(
        "unknown-dataset",
        "names",
        "`task.dataset: imbd`",
        "task.dataset: unknown dataset 'imbd'; did you mean 'imdb'?",
        sets=["task.dataset=imbd"],
    ),
    Case(
        "unknown-judge",
        "names",
        "`eval.judge: reward-modle`",
        "eval.judge: unknown judge 'reward-modle'; did you mean 'reward-model', 'heldout-reward-model'?",
        sets=["eval.judge=reward-modle"],
    ),
    # ---- devices and seeds
    Case(
        "device-cuda",
        "device",
        "`device: cuda` on a machine without CUDA",
        "device: 'cuda' requested but CUDA is not available on this machine",
        sets=["device=cuda"],
        needs_no_cuda=True,
    ),
    Case(
        "device-index", "device", "`device: cuda:7`", "device: 'cuda:7' requested but", sets=["device=cuda:7"]
    ),
    Case(
        "device-garbage",
        "device",
        "`device: tpu`",
        "device: unknown device 'tpu' (use auto, cpu, cuda, cuda:N or mps)",
        sets=["device=tpu"],
    ),
    Case("seed-negative", "seeds", "`seed: -1`", "seed: must be >= 0, got -1", sets=["seed=-1"]),
    Case(
        "train-seed-negative",
        "seeds",
        "`train_seed: -3`",
        "train_seed: must be >= 0, got -3",
        sets=["train_seed=-3"],
    ),
    Case(
        "split-seed-negative",
        "seeds",
        "`task.split_seed: -5`",
        "task.split_seed: must be >= 0, got -5",
        sets=["task.split_seed=-5"],
    ),
    Case("seed-float", "seeds", "`seed: 1.5`", "seed: expected an integer, got float 1.5", sets=["seed=1.5"]),
    # ---- models
    Case(
        "builtin-unknown",
        "model",
        "`builtin:nope`",
        "model.name_or_path: unknown model 'nope'",
        sets=["model.name_or_path=builtin:nope"],
    ),
    Case(
        "builtin-close",
        "model",
        "`builtin:tiny-gpt2` (close to an alias)",
        "unknown model 'tiny-gpt2'; did you mean 'tiny-gpt2-imdb'?",
        sets=["model.name_or_path=builtin:tiny-gpt2"],
    ),
    Case(
        "model-missing-folder",
        "model",
        "a local path that does not exist",
        "model.name_or_path: cannot load '{tmp}/no_model' as a local folder: it does not exist",
        sets=["model.name_or_path={tmp}/no_model"],
    ),
    Case(
        "model-empty-folder",
        "model",
        "an empty folder",
        "as a local folder: no config.json in it",
        files={"model/.keep": ""},
        sets=["model.name_or_path={tmp}/model"],
    ),
    Case(
        "model-path-is-file",
        "model",
        "a file instead of a folder",
        "as a local folder: it is a file, not a model folder",
        files={"model.bin": "x"},
        sets=["model.name_or_path={tmp}/model.bin"],
    ),
    Case(
        "model-config-not-json",
        "model",
        "config.json that is not JSON",
        "config.json is not valid JSON",
        files={"model/config.json": "{model_type: gpt2"},
        sets=["model.name_or_path={tmp}/model"],
    ),
    Case(
        "model-config-not-object",
        "model",
        "config.json holding a list",
        "config.json must hold a JSON object, got list",
        files={"model/config.json": "[1, 2]"},
        sets=["model.name_or_path={tmp}/model"],
    ),
    Case(
        "model-config-wrong-type",
        "model",
        'config.json with `n_layer: "2"`',
        "config.json: n_layer must be a positive integer, got '2'",
        files={"model/config.json": '{"model_type": "gpt2", "n_layer": "2"}'},
        sets=["model.name_or_path={tmp}/model"],
    ),
    Case(
        "model-config-bad-token-id",
        "model",
        "config.json with `eos_token_id: -1`",
        "config.json: eos_token_id must be a token id (an integer >= 0), got -1",
        files={"model/config.json": '{"model_type": "gpt2", "eos_token_id": -1}'},
        sets=["model.name_or_path={tmp}/model"],
    ),
    Case(
        "model-no-tokenizer",
        "model",
        "config.json but no tokenizer files",
        "no tokenizer files in it",
        files={"model/config.json": '{"model_type": "gpt2"}'},
        sets=["model.name_or_path={tmp}/model"],
    ),
    Case(
        "model-no-weights",
        "model",
        "config and tokenizer but no weights",
        "no weights in it",
        files={"model/config.json": '{"model_type": "gpt2"}', "model/tokenizer.json": "{}"},
        sets=["model.name_or_path={tmp}/model"],
    ),
    # ---- preference data files
    Case(
        "data-missing",
        "data",
        "`preferences.source` file does not exist",
        "preferences.source: file not found: {tmp}/nope.jsonl",
        sets=["preferences.source={tmp}/nope.jsonl"],
    ),
    Case(
        "data-folder",
        "data",
        "a folder as source",
        "preferences.source: {tmp}/data is a folder but not one written by datasets' save_to_disk",
        files={"data/.keep": ""},
        sets=["preferences.source={tmp}/data"],
    ),
    Case(
        "data-suffix",
        "data",
        "unsupported suffix",
        "unsupported file type '.xlsx' (use .jsonl, .json, .csv, .parquet, "
        "a save_to_disk folder or hf:DATASET_ID)",
        files={"pairs.xlsx": "x"},
        sets=["preferences.source={tmp}/pairs.xlsx"],
    ),
    Case(
        "data-empty",
        "data",
        "empty .jsonl",
        "{tmp}/pairs.jsonl: no preference pairs (empty data)",
        files={"pairs.jsonl": "\n"},
        sets=[DATA],
    ),
    Case(
        "data-empty-csv",
        "data",
        "empty .csv",
        "{tmp}/pairs.csv: no preference pairs (empty data)",
        files={"pairs.csv": ""},
        sets=["preferences.source={tmp}/pairs.csv"],
    ),
    Case(
        "data-not-json",
        "data",
        "a .jsonl line that is not JSON",
        "pairs.jsonl: cannot parse JSONL: line 2",
        files={"pairs.jsonl": GOOD_ROW + "{not json\n"},
        sets=[DATA],
    ),
    Case(
        "data-json-scalar",
        "data",
        "a .json file holding a number",
        'pairs.json: expected a JSON list of rows (or {"data": [...]}), got int 42',
        files={"pairs.json": "42"},
        sets=["preferences.source={tmp}/pairs.json"],
    ),
    Case(
        "data-not-utf8",
        "data",
        "a file that is not UTF-8",
        "pairs.jsonl: not UTF-8 text",
        files={"pairs.jsonl": b"\xff\xfe\x00bad"},
        sets=[DATA],
    ),
    Case(
        "data-rows-not-mappings",
        "data",
        "rows that are lists",
        "pairs.jsonl: row 0: expected a mapping of column to value",
        files={"pairs.jsonl": '["The film", " great", " bad"]\n'},
        sets=[DATA],
    ),
    Case(
        "data-missing-column",
        "data",
        "no `chosen` column",
        "pairs.jsonl: missing column 'chosen' (columns: prompt, good, "
        "rejected; map yours with preferences.columns)",
        files={"pairs.jsonl": '{"prompt": "The film", "good": " great", "rejected": " bad"}\n'},
        sets=[DATA],
    ),
    Case(
        "data-missing-column-later",
        "data",
        "a later row lacks a column",
        "pairs.jsonl: row 1: missing column 'rejected'",
        files={"pairs.jsonl": GOOD_ROW + '{"prompt": "A", "chosen": " b"}\n'},
        sets=[DATA],
    ),
    Case(
        "data-csv-missing-column",
        "data",
        "a .csv without `rejected`",
        "pairs.csv: missing column 'rejected'",
        files={"pairs.csv": "prompt,chosen,worse\nThe film, great, bad\n"},
        sets=["preferences.source={tmp}/pairs.csv"],
    ),
    Case(
        "data-empty-string",
        "data",
        "an empty `chosen`",
        "pairs.jsonl: row 1: column 'chosen' is empty",
        files={"pairs.jsonl": GOOD_ROW + '{"prompt": "A", "chosen": "", "rejected": " b"}\n'},
        sets=[DATA],
    ),
    Case(
        "data-number-not-text",
        "data",
        "a number instead of text",
        "pairs.jsonl: row 0: column 'rejected' must be text, got int 3",
        files={"pairs.jsonl": '{"prompt": "The film", "chosen": " great", "rejected": 3}\n'},
        sets=[DATA],
    ),
    Case(
        "data-all-identical",
        "data",
        "every pair has chosen == rejected",
        "pairs.jsonl: all 2 pairs have chosen == rejected; there is no preference to learn",
        files={"pairs.jsonl": '{"prompt": "A", "chosen": " same", "rejected": " same"}\n' * 2},
        sets=[DATA],
    ),
    Case(
        "data-bad-group",
        "data",
        "a `group` column that is neither an integer nor text",
        "pairs.jsonl: row 0: column 'group' must be an integer or text naming the row's group, got list [1]",
        files={"pairs.jsonl": GOOD_ROW.replace("}", ', "group": [1]}')},
        sets=[DATA],
    ),
    Case(
        "data-one-group",
        "data",
        "a single pair with a held-out fraction",
        "preferences.heldout_fraction: all 1 prompt group(s) of {tmp}/pairs.jsonl would be held out (0.1); "
        "at least 2 prompts",
        files={"pairs.jsonl": GOOD_ROW},
        sets=[DATA],
    ),
    Case(
        "data-unknown-role",
        "data",
        "`preferences.columns: {answer: ...}`",
        "preferences.columns.answer: unknown column role 'answer' (roles: prompt, chosen, rejected",
        sets=["preferences.columns={answer: response}"],
    ),
    Case(
        "data-mapped-column-absent",
        "data",
        "`preferences.columns` names a column the file lacks",
        "column 'better' named in preferences.columns is not in the data",
        files={"pairs.jsonl": ROWS},
        sets=[DATA, "preferences.columns={chosen: better}"],
    ),
    Case(
        "data-chat-no-role",
        "data",
        "a conversational message without `role`",
        "pairs.jsonl: row 1: column 'chosen': message 0: no 'role' (a message is {\"role\": ..., "
        '"content": ...})',
        files={
            "pairs.jsonl": CHAT_ROW
            + CHAT_ROW.replace('{"role": "assistant", "content": "Great."}', '{"content": "Great."}')
        },
        sets=[DATA],
    ),
    Case(
        "data-chat-mixed",
        "data",
        "plain-text rows and conversational rows in one file",
        "pairs.jsonl: row 1: column 'prompt' holds lists of messages but row 0 holds plain text; every row "
        "must be one kind",
        files={"pairs.jsonl": GOOD_ROW + CHAT_ROW},
        sets=[DATA],
    ),
    Case(
        "data-chat-no-template",
        "data",
        "conversational rows for a model whose tokenizer has no chat template",
        "tokenizer has no chat_template; use a model whose tokenizer has a chat_template (an instruct "
        "model), or give prompt, chosen and rejected as plain text",
        files={
            "pairs.jsonl": CHAT_ROW
            + CHAT_ROW.replace("The film?", "The cast?")
            + CHAT_ROW.replace("The film?", "The plot?")
        },
        sets=[DATA],
    ),
    # ---- plugins
    Case(
        "plugin-missing-file",
        "plugins",
        "`--plugins` file does not exist",
        "plugins: plugin file not found: {tmp}/nope.py",
        args=["--plugins", "{tmp}/nope.py"],
    ),
    Case(
        "plugin-missing-in-recipe",
        "plugins",
        "recipe `plugins:` names a missing file",
        "plugin file not found: nope.py",
        recipe="method: dpo\nplugins: [nope.py]\n",
    ),
    Case(
        "plugin-module-missing",
        "plugins",
        "`--plugins` module that is not installed",
        "plugin module not found: no_such_module_xyz",
        args=["--plugins", "no_such_module_xyz"],
    ),
    Case(
        "plugin-import-error",
        "plugins",
        "plugin imports a missing dependency",
        "failed to load: ModuleNotFoundError: No module named 'no_such_dependency_xyz'",
        files={"p.py": "import no_such_dependency_xyz\n"},
        args=["--plugins", "{tmp}/p.py"],
    ),
    Case(
        "plugin-syntax-error",
        "plugins",
        "plugin with a syntax error",
        "failed to load: SyntaxError",
        files={"p.py": "def broken(:\n"},
        args=["--plugins", "{tmp}/p.py"],
    ),
    Case(
        "plugin-signature-beta",
        "plugins",
        "loss takes `beta` positionally",
        "loss 'ba_sig_beta' (plugin {tmp}/p.py) must take beta as a keyword-only parameter",
        files={"p.py": loss_plugin("ba_sig_beta", "return LossOutput(-c, c, r)", "logps, beta")},
        args=["--plugins", "{tmp}/p.py"],
    ),
    Case(
        "plugin-signature-extra",
        "plugins",
        "extra loss parameter without a default",
        "parameter 'margin' must be keyword-only with a default",
        files={"p.py": loss_plugin("ba_sig_extra", "return LossOutput(-c, c, r)", "logps, *, beta, margin")},
        args=["--plugins", "{tmp}/p.py"],
    ),
    Case(
        "plugin-signature-no-logps",
        "plugins",
        "loss with no positional `logps`",
        "must take logps as its first positional parameter",
        files={"p.py": loss_plugin("ba_sig_logps", "return LossOutput(-c, c, r)", "*, logps, beta")},
        args=["--plugins", "{tmp}/p.py"],
    ),
    Case(
        "plugin-return-type",
        "plugins",
        "loss returns a tensor, not a LossOutput",
        "dpo.loss: loss 'ba_ret_tensor' (plugin {tmp}/p.py): must return a LossOutput(losses, "
        "chosen_rewards, rejected_rewards), got Tensor",
        files={"p.py": loss_plugin("ba_ret_tensor", "return -(c - r)")},
        args=["--plugins", "{tmp}/p.py"],
        sets=["dpo.loss=ba_ret_tensor"],
    ),
    Case(
        "plugin-return-shape",
        "plugins",
        "loss returns a scalar loss",
        "LossOutput.losses must be a per-pair tensor of shape [B] (B = 3 here), got ()",
        files={"p.py": loss_plugin("ba_ret_scalar", "return LossOutput(-(c - r).mean(), c, r)")},
        args=["--plugins", "{tmp}/p.py"],
        sets=["dpo.loss=ba_ret_scalar"],
    ),
    Case(
        "plugin-nan",
        "plugins",
        "loss returns NaN",
        "LossOutput.losses is not finite on a test batch",
        files={
            "p.py": loss_plugin("ba_nan", "return LossOutput(torch.log(c - r - 100), c.detach(), r.detach())")
        },
        args=["--plugins", "{tmp}/p.py"],
        sets=["dpo.loss=ba_nan"],
    ),
    Case(
        "plugin-no-gradient",
        "plugins",
        "loss detached from the log-probs",
        "LossOutput.losses does not depend on logps (no gradient)",
        files={
            "p.py": loss_plugin("ba_detached", "return LossOutput((c - r).detach(), c.detach(), r.detach())")
        },
        args=["--plugins", "{tmp}/p.py"],
        sets=["dpo.loss=ba_detached"],
    ),
    Case(
        "plugin-raises",
        "plugins",
        "loss raises on the test batch",
        "loss 'ba_raises' (plugin {tmp}/p.py): failed on a test batch: ZeroDivisionError: division by zero",
        files={"p.py": loss_plugin("ba_raises", "return 1 / 0")},
        args=["--plugins", "{tmp}/p.py"],
        sets=["dpo.loss=ba_raises"],
    ),
    Case(
        "plugin-duplicate-name",
        "plugins",
        "plugin registers a built-in's name",
        "loss 'sigmoid' is already registered by builtin; choose another name",
        files={"p.py": loss_plugin("sigmoid", "return LossOutput(-c, c, r)")},
        args=["--plugins", "{tmp}/p.py"],
    ),
    # ---- loss parameters
    Case(
        "loss-param-unknown",
        "loss params",
        "a parameter the loss does not take",
        "dpo.loss_params.label_smoothing: loss 'hinge' takes no parameter 'label_smoothing' (it takes: none)",
        sets=["dpo.loss=hinge", "dpo.loss_params={label_smoothing: 0.1}"],
    ),
    Case(
        "loss-param-range",
        "loss params",
        "robust `label_smoothing: 0.7`",
        "dpo.loss_params.label_smoothing: must be < 0.5, got 0.7",
        sets=["dpo.loss=robust", "dpo.loss_params={label_smoothing: 0.7}"],
    ),
    Case(
        "loss-param-negative",
        "loss params",
        "sigmoid `label_smoothing: -0.1`",
        "dpo.loss_params.label_smoothing: must be >= 0.0, got -0.1",
        sets=["dpo.loss_params={label_smoothing: -0.1}"],
    ),
    Case(
        "loss-param-type",
        "loss params",
        "text where a number belongs",
        "dpo.loss_params.label_smoothing: expected a number, got str 'high'",
        sets=["dpo.loss_params={label_smoothing: high}"],
    ),
    Case(
        "loss-param-nan",
        "loss params",
        "`label_smoothing: .nan`",
        "dpo.loss_params.label_smoothing: must be a finite number",
        sets=["dpo.loss_params={label_smoothing: .nan}"],
    ),
    Case(
        "loss-param-plugin-refuses",
        "loss params",
        "a plugin loss raising ValueError for a value",
        "dpo.loss_params: loss 'ba_refuses' (plugin {tmp}/p.py): margin must be positive",
        files={
            "p.py": loss_plugin(
                "ba_refuses",
                "if margin <= 0:\n    raise ValueError('margin must be positive')\n"
                "return LossOutput(-(c - r), c.detach(), r.detach())",
                "logps, *, beta, margin=1.0",
            )
        },
        args=["--plugins", "{tmp}/p.py"],
        sets=["dpo.loss=ba_refuses", "dpo.loss_params={margin: -1}"],
    ),
    Case(
        "loss-params-not-mapping",
        "loss params",
        "`loss_params: 0.1`",
        "dpo.loss_params: expected a mapping, got float 0.1",
        sets=["dpo.loss_params=0.1"],
    ),
    # ---- the run directory
    Case(
        "out-is-file",
        "--out",
        "`--out` names an existing file",
        "--out {tmp}/taken: exists and is not a folder",
        files={"taken": "x"},
        args=["--out", "{tmp}/taken"],
    ),
    Case(
        "out-under-file",
        "--out",
        "`--out` inside a file",
        "--out {tmp}/taken/run: cannot create a folder under {tmp}/taken, which is a file",
        files={"taken": "x"},
        args=["--out", "{tmp}/taken/run"],
    ),
]


@contextlib.contextmanager
def registries_restored():
    """The plugin losses these cases register leave the registries as they were (no name leaks into the
    close-match lists of other tests or later cases)."""
    from alignkit import registry

    registry.load_builtins()
    saved = {name: dict(reg._entries) for name, reg in registry.REGISTRIES.items()}
    loaded = set(registry._loaded)
    try:
        yield
    finally:
        for name, reg in registry.REGISTRIES.items():
            reg._entries.clear()
            reg._entries.update(saved[name])
        registry._loaded.intersection_update(loaded)


@pytest.fixture(autouse=True)
def _registries_restored():
    with registries_restored():
        yield


def run_case(case: Case, tmp: Path, tiny: list[str]):
    """Create the case's files under ``tmp``, run ``alignkit run`` on it, return (result, error line)."""
    fill = lambda text: text.replace("{tmp}", str(tmp))  # noqa: E731
    for name, content in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    recipe = tmp / ("recipe.yaml" if case.recipe is not None else "missing.yaml")
    if case.recipe is not None:
        recipe.write_text(case.recipe)
    args = ["run", str(recipe)] + ([] if "--out" in case.args else ["--out", str(tmp / "run")])
    args += [fill(a) for a in case.args]
    for override in [*tiny, *case.sets]:
        args += ["--set", fill(override)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    errors = [line for line in result.output.splitlines() if line.startswith("alignkit: error: ")]
    return result, errors


def documented_line(line: str, tmp: Path, model: Path) -> str:
    """An error line as docs/errors.md shows it: the case folder as <tmp>, the test model as <model>."""
    return line.replace(str(model), "<model>").replace(str(tmp), "<tmp>")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, tiny_overrides):
    if case.needs_no_cuda and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result, errors = run_case(case, tmp_path, tiny_overrides)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(errors) == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1] == errors[0], result.output  # warnings may precede the error, nothing follows it
    assert case.expect.replace("{tmp}", str(tmp_path)) in errors[0], errors[0]
    # nothing written: only the case's own files (and their folders) exist, no run directory
    ours = {tmp_path / "recipe.yaml"} | {tmp_path / n for n in case.files}
    ours |= {parent for p in ours for parent in p.parents if tmp_path in parent.parents}
    assert set(tmp_path.rglob("*")) <= ours, set(tmp_path.rglob("*")) - ours
    assert not (tmp_path / "run").exists()


def documented_rows(text: str) -> dict[str, str]:
    """{case id: documented error line} from the table in docs/errors.md."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `([a-z0-9-]+)` \|.*\| `(alignkit: error: .*)` \|$", line)
        if match:
            rows[match.group(1)] = match.group(2).replace("\\|", "|")
    return rows


def test_docs_table_matches_cases():
    rows = documented_rows(DOC.read_text())
    assert list(rows) == [c.id for c in CASES], (
        "regenerate: python tests/reliability/test_bad_inputs.py --write"
    )
    for case in CASES:
        assert case.expect.replace("{tmp}", "<tmp>") in rows[case.id], (case.id, rows[case.id])


# --------------------------------------------------------------------------------------------------
# inputs that work but deserve a notice, and safety of loading


def _pairs_recipe(tmp_path, rows: str, *extra: str):
    from alignkit.recipe import load_recipe

    (tmp_path / "pairs.jsonl").write_text(rows)
    return load_recipe(None, [f"preferences.source={tmp_path}/pairs.jsonl", "method=dpo", *extra])


def test_identical_pairs_are_dropped_with_a_notice(tmp_path, capsys, imdb_model_dir):
    same = '{"prompt": "B", "chosen": " same", "rejected": " same"}\n'
    _pairs_recipe(tmp_path, ROWS3 + same, f"model.name_or_path={imdb_model_dir}")
    err = capsys.readouterr().err
    assert "alignkit: warning: " in err
    assert "dropped 1 of 4 pairs whose chosen and rejected are identical; 3 remain" in err
    from alignkit.data.preferences import PreferenceConfig, load_preferences

    assert len(load_preferences(PreferenceConfig(source=str(tmp_path / "pairs.jsonl")))) == 3


def test_long_prompts_are_counted_and_the_cut_is_stated(tmp_path, capsys, imdb_model_dir):
    long = '{"prompt": "' + "the film was long " * 20 + '", "chosen": " yes", "rejected": " no"}\n'
    _pairs_recipe(tmp_path, ROWS + long, f"model.name_or_path={imdb_model_dir}", "model.max_length=48")
    err = capsys.readouterr().err
    assert "1 of 3 prompts are longer than the context allows; prompts longer than 24 tokens " \
           "(model.max_prompt_length) are cut to their last 24" in err


def test_prompt_lengths_not_counted_without_a_tokenizer_on_disk(tmp_path, capsys):
    _pairs_recipe(tmp_path, ROWS3, "model.name_or_path=some-org/some-model")
    assert (
        "prompt lengths not counted (some-org/some-model's tokenizer is not on disk yet)"
        in capsys.readouterr().err
    )


def test_trust_remote_code_warns(tmp_path, capsys):
    from alignkit.recipe import load_recipe

    recipe = load_recipe(None, ["method=dpo", "model.name_or_path=some-org/some-model",
                                "model.trust_remote_code=true"])
    assert recipe.model.trust_remote_code
    assert "alignkit: warning: " in capsys.readouterr().err
    assert not load_recipe(None, ["method=dpo"]).model.trust_remote_code


def test_working_directory_plugins_folder_is_never_imported(tmp_path, monkeypatch):
    from alignkit.registry import default_plugin_dirs, load_plugins

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "evil.py").write_text("raise SystemExit('cwd plugin ran')\n")
    monkeypatch.chdir(tmp_path)
    assert tmp_path / "plugins" not in default_plugin_dirs()
    load_plugins()  # would exit if the working directory's plugins/ were imported


def test_package_reads_no_pickles():
    """No torch.load, pickle or allow_pickle=True in the files this suite guards (loading never runs code)."""
    root = Path(__file__).resolve().parents[2] / "alignkit"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert (
            "torch.load(" not in text and "import pickle" not in text and "allow_pickle=True" not in text
        ), path


# --------------------------------------------------------------------------------------------------
# regenerating the table in docs/errors.md


def render_table(lines: dict[str, str]) -> str:
    out = ["| id | topic | bad input | what you see (stderr, exit code 1) |", "|---|---|---|---|"]
    for case in CASES:
        line = lines[case.id].replace("|", "\\|")
        out.append(f"| `{case.id}` | {case.topic} | {case.what.replace('|', '/')} | `{line}` |")
    return "\n".join(out)


def _generate() -> str:
    """Run every case through the CLI with a tiny on-disk model (tests/tiny.py) and render the table."""
    import os
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tiny import tiny_gpt2, tiny_tokenizer

    lines = {}
    with tempfile.TemporaryDirectory() as root:
        os.environ["ALIGNKIT_CACHE"] = str(Path(root) / "cache")
        model = Path(root) / "model"
        tokenizer = tiny_tokenizer()
        tiny_gpt2(tokenizer).save_pretrained(model)
        tokenizer.save_pretrained(model)
        tiny = [f"model.name_or_path={model}", "model.max_length=48", "task.max_examples=600",
                "preferences.n_prompts=48", "preferences.max_new_tokens=12", "eval.n_prompts=24",
                "eval.max_new_tokens=12"]
        for i, case in enumerate(CASES):
            tmp = Path(root) / f"case{i}"
            tmp.mkdir()
            with registries_restored():
                result, errors = run_case(case, tmp, tiny)
            assert len(errors) == 1, (case.id, result.output)
            lines[case.id] = documented_line(errors[0], tmp, model)
    return render_table(lines)


if __name__ == "__main__":
    table = _generate()
    if "--write" in sys.argv:
        text = DOC.read_text()
        start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + table + "\n" + text[stop:])
    else:
        print(table)
