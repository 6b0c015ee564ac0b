"""The builder of one run's shared objects, built lazily and cached on disk: the task, the SFT policy and
its reference, prompts, the gold reward and preference pairs, the reward model. Every method reads these
same objects (through the read-only :class:`~alignkit.stages.workspace.Workspace`), which is what makes a
comparison fair by construction; only the builder writes them, and what the manifest records of them. Each
cached stage is a checksummed ``CacheEntry`` (alignkit/cache.py): a truncated or half-written one is rebuilt
with a notice, never trusted. Their cache keys come from :class:`~alignkit.stages.keys.StageKeys`."""

from __future__ import annotations

from pathlib import Path

import torch

from alignkit.artifacts import Artifact
from alignkit.cache import CacheEntry, default_cache_dir
from alignkit.context import Budget, RunContext
from alignkit.data.chat import plain_text
from alignkit.data.pairs_task import read_prompt_set
from alignkit.data.preferences import PreferenceData, generate_preferences, load_preferences
from alignkit.data.task import Task, sample_prompts
from alignkit.data.unpaired import UnpairedData
from alignkit.errors import AlignkitError, DataError
from alignkit.eval.evaluator import ReferenceSamples, score_texts
from alignkit.eval.judges import is_pairwise, judge_agreement
from alignkit.models.loading import load_tokenizer, resolve_model_path
from alignkit.models.pairs import example_logprobs, reference_logprobs
from alignkit.models.policy import Policy, Reference
from alignkit.recipe import Recipe, method_needs
from alignkit.registry import DATASETS, REWARDS
from alignkit.runlog import MetricsLog, read_jsonl, write_jsonl
from alignkit.runtime import Runtime, start
from alignkit.stages.keys import JUDGE_SPLIT_JUDGE, JUDGE_SPLIT_SEED, StageKeys
from alignkit.stages.reward_models import RewardModelStages
from alignkit.stages.shipped_stages import LOGPS_FILE, PAIRS, PAIRS_FILE, REFERENCE_LOGPS, shipped_stage
from alignkit.stages.stage import stage
from alignkit.stages.workspace import RecordedReward

# what tests and library users may hand a builder instead of having it built (StageBuilder.provide)
PROVIDABLE = ("gold", "judge", "preferences", "proxy_reward", "proxy_reward_4bit", "reward_model",
              "reward_model_4bit", "sft")


class StageBuilder(RewardModelStages):
    """Builds what a method receives (the :class:`~alignkit.stages.workspace.Workspace` it reads): shared
    data, policies, rewards, and the run's context (runtime, metrics log, training budget, checkpointer,
    trajectory hook); and records the cache keys and descriptions of what it built for the manifest. Built
    once per run, or on its own for library use: ``StageBuilder(recipe, RunContext(runtime))``."""

    def __init__(self, recipe: Recipe, ctx: RunContext, run_dir: Path | None = None,
                 cache_dir: Path | None = None):
        self.recipe = recipe
        self.ctx = ctx
        self.run_dir = Path(run_dir) if run_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.keys = StageKeys(recipe, self.cache_dir)
        self.seed = recipe.seed  # shared stages
        self.train_seed = recipe.seed if recipe.train_seed is None else recipe.train_seed  # this run only
        self.stages: dict[str, object] = {}  # each stage built so far or provided, by name (see `stage`)
        # what the manifest records of the stages this run used: their cache keys, ...
        self.artifact_keys: dict[str, str] = {}
        self.gold_meta: dict | None = None  # the gold reward's own record (e.g. held-out accuracy)
        self.reward_model_summary: dict | None = None  # held-out evaluation of the learned reward model

    @classmethod
    def for_recipe(cls, recipe: Recipe, run_dir: Path | None = None, *, cache_dir: Path | None = None,
                   log: MetricsLog | None = None) -> "StageBuilder":
        """A builder on its own (library use, tests, benchmarks): the recipe's runtime in a fresh context,
        metrics to ``log`` (default: kept in memory), no checkpoints."""
        ctx = RunContext(start(recipe.device, recipe.precision), log or MetricsLog(None))
        return cls(recipe, ctx, run_dir, cache_dir)

    @property
    def runtime(self) -> Runtime:
        return self.ctx.runtime

    @property
    def device(self) -> torch.device:
        return self.ctx.runtime.device

    @property
    def budget(self) -> Budget:
        """What this run's training consumed (a shared stage being built counts into its own)."""
        return self.ctx.budget

    def provide(self, **artifacts) -> "StageBuilder":
        """Use these objects instead of building them (``gold=fn``, ``preferences=data``, ``reward_model=m``,
        ...): for tests and library users who bring their own. Each replaces the stage of its name, built or
        not; only the stages in ``PROVIDABLE`` can be. Returns the builder."""
        unknown = sorted(set(artifacts) - set(PROVIDABLE))
        if unknown:
            raise AlignkitError(f"StageBuilder.provide: cannot provide {', '.join(unknown)} "
                                f"(can: {', '.join(PROVIDABLE)})")
        self.stages.update(artifacts)
        return self

    def resolve(self, artifact: Artifact):
        """Build (or load from the cache) a shared artifact a method declared it needs."""
        builders = {Artifact.TRAIN_PAIRS: lambda: self.train_pairs,
                    Artifact.REWARD_MODEL: lambda: self.reward_model,
                    Artifact.REWARD_MODEL_4BIT: lambda: self.reward_model_4bit,
                    Artifact.REFERENCE_LOGPS: lambda: self.reference_logps}
        return builders[artifact]()

    @property
    def has_pairs(self) -> bool:
        """Whether this run read or built the shared preference pairs (and their split)."""
        return "_pair_split" in self.stages

    @stage
    def task(self) -> Task:
        """The task: a registered dataset, or (``task.dataset: preferences``) the preference data's own
        prompts, split as the pairs are."""
        entry = DATASETS.entry(self.recipe.task.dataset)
        if entry.meta.get("from_pairs"):
            return entry.obj(self.recipe.task, self.train_pairs, self.heldout_pairs)
        return entry.obj(self.recipe.task)

    def tokenizer_loader(self):
        """``() -> tokenizer`` of the policy, loaded only when called (conversational data renders with
        it)."""
        model = self.recipe.model
        return lambda: load_tokenizer(resolve_model_path(model.name_or_path, self.cache_dir, self.runtime),
                                      model)

    def load_policy(self) -> Policy:
        """A fresh, trainable copy of the starting (SFT) policy."""
        torch.manual_seed(self.train_seed)
        return Policy.load(self.recipe.model, cache_dir=self.cache_dir, runtime=self.runtime)

    @stage
    def sft(self) -> Policy:
        """The frozen starting policy, shared by every consumer that only samples or scores with it."""
        torch.manual_seed(self.seed)
        policy = Policy.load(self.recipe.model, cache_dir=self.cache_dir, runtime=self.runtime)
        policy.model.requires_grad_(False)
        return policy

    def reference_for(self, policy: Policy) -> Reference:
        """pi_ref for a policy under training: its adapter-disabled self (LoRA) or the frozen SFT model."""
        return Reference(policy, None if policy.is_adapter else self.sft.model)

    def prompts(self, split: str, n: int) -> list[str]:
        """``n`` prompts of a split (``train`` or ``heldout``), fixed by the seed: the task's whole prompts
        (``task.dataset: preferences``) or 2-8 token prefixes of its texts (IMDb)."""
        tokenizer = None if self.task.train_prompts is not None else self.sft.tokenizer
        return self.task.prompts(tokenizer, split, n, self.recipe.task, seed=self.seed)

    @stage
    def eval_prompts(self) -> list[str]:
        """The prompts every method is evaluated on: ``eval.prompts`` when set, else the task's held-out
        ones."""
        cfg = self.recipe.eval
        if not cfg.prompts:
            return self.prompts("heldout", cfg.n_prompts)
        prefs = self.recipe.preferences
        conversational = prefs.is_user_data and self.preferences.conversational
        prompts = read_prompt_set(cfg.prompts, conversational=conversational,
                                  tokenizer=self.tokenizer_loader()(), split=prefs.split, config=prefs.config,
                                  column=prefs.columns.get("prompt", "prompt"))
        return sample_prompts(prompts, cfg.n_prompts, self.seed, "eval")

    @stage
    def gold(self):
        """The ground-truth reward: ``gold(prompts, completions) -> scores``."""
        return self._reward(self.recipe.gold_reward, gold=True)

    @stage
    def judge(self):
        """What decides win rates: the gold reward unless ``eval.judge`` names another registered judge."""
        name = self.recipe.eval.judge
        judge = self.gold if name in ("gold", self.recipe.gold_reward) else self._reward(name)
        if is_pairwise(judge):  # it reads the question and the replies, not the policy's chat markup
            tokenizer = self.tokenizer_loader()()
            if getattr(tokenizer, "chat_template", None):
                judge.readable = plain_text(tokenizer)
        return judge

    def _reward(self, name: str, gold: bool = False):
        """A registered reward built on this run's stages; what the gold reward reports of itself (its cache
        key, its description) goes to the manifest."""
        built = REWARDS.get(name)(self)
        if not isinstance(built, RecordedReward):
            return built
        if gold:
            self.artifact_keys["gold_reward"], self.gold_meta = built.key, built.meta
        return built.score

    def judge_agreement(self, of: str = "judge") -> dict | None:
        """The agreement of the win-rate judge (``of="judge"``) or the gold reward (``of="gold"``) with the
        held-out preference pairs (:func:`~alignkit.eval.judges.judge_agreement`) when the run's method learns
        from the pairs, or they are the user's own data; never by loading generated pairs a run does not use
        (that would make, say, an SFT run depend on them, and its summary on the state of the cache)."""
        cfg, recipe = self.recipe.preferences, self.recipe
        learns = Artifact.TRAIN_PAIRS in method_needs(recipe.method, recipe.method_config(recipe.method))
        if not (self.has_pairs or learns or cfg.is_user_data):
            return None
        judge, name = (self.gold, recipe.gold_reward) if of == "gold" else (self.judge, recipe.eval.judge)
        return {"judge": name, **judge_agreement(judge, self.heldout_pairs, cfg.append_eos, score_texts,
                                                 recipe.eval.agreement_pairs)}

    @property
    def gold_is_judge(self) -> bool:
        """Whether the win-rate judge is the gold reward itself (then one agreement describes both)."""
        return self.recipe.eval.judge in ("gold", self.recipe.gold_reward)

    def stage_keys(self) -> dict[str, str]:
        """The cache key of every shared stage under this recipe."""
        return self.keys.all()

    # shared stages

    def cache_entry(self, kind: str, key: str, suffix: str = "") -> CacheEntry:
        """The checksummed, lock-protected cache entry ``<cache_dir>/<kind>/<key><suffix>`` (a folder when
        ``suffix`` is empty): a missing, partial or corrupt one is rebuilt, never trusted."""
        return CacheEntry(self.cache_dir, kind, key, suffix)

    @stage
    def preferences(self) -> PreferenceData:
        """Preference pairs from a file/dataset, or sampled from the SFT policy and gold-labelled (cached;
        shipped for the default recipe, :mod:`~alignkit.stages.shipped_stages`)."""
        cfg = self.recipe.preferences
        if cfg.is_user_data:  # conversational rows are rendered with the policy's own chat template
            return load_preferences(cfg, self.tokenizer_loader())
        key = self.keys.pairs_key()
        self.artifact_keys["preferences"] = key
        read = lambda path: PreferenceData.from_records(read_jsonl(path), str(path))  # noqa: E731
        shipped = shipped_stage(PAIRS, self.keys.pairs_made_by())
        if shipped is not None:
            return read(shipped / PAIRS_FILE)
        return self.cache_entry("preferences", key, ".jsonl").fetch(self.generate_pairs, read, self.runtime)

    def generate_pairs(self, path: Path) -> PreferenceData:
        """Sample the pairs from the SFT policy, label them with the gold reward, write them to ``path``."""
        cfg = self.recipe.preferences
        prompts = self.prompts("train", cfg.n_prompts)
        data = generate_preferences(self.sft, prompts, self.gold, cfg, seed=self.seed, runtime=self.runtime)
        if cfg.max_pairs:
            data = data.subset(list(range(min(len(data), cfg.max_pairs))))
        write_jsonl(path, data.records())
        return data

    @stage
    def _pair_split(self) -> tuple[PreferenceData, PreferenceData, PreferenceData | None]:
        fraction, pairs, judge = self.recipe.preferences.heldout_fraction, self.preferences, None
        if self.keys.judge_split:  # carved out first, by prompt group: pairs no method (nor its split) sees
            pairs, judge = pairs.split(self.recipe.eval.judge_fraction, self.seed + JUDGE_SPLIT_SEED)
        train, heldout = pairs.split(fraction, self.seed)
        if not len(train):
            raise DataError(f"preferences.heldout_fraction: all {len(set(heldout.group))} prompt group(s) of "
                            f"the preference pairs are held out ({fraction}"
                            + (f", after eval.judge_fraction {self.recipe.eval.judge_fraction} went to the "
                               "judge" if judge is not None else "") + "); at least 2 prompts are needed")
        self.artifact_keys["pair_split"] = self.keys.split_key()
        return train, heldout, judge

    @property
    def train_pairs(self) -> PreferenceData:
        """The pairs every method learns from: the reward model, DPO and its variants, Preferred-FT."""
        return self._pair_split[0]

    @property
    def heldout_pairs(self) -> PreferenceData:
        """Pairs of held-out prompt groups, never trained on: the reward model's accuracy is measured here."""
        return self._pair_split[1]

    @property
    def judge_pairs(self) -> PreferenceData:
        """The judge split: pairs of prompt groups carved out for the heldout-reward-model judge alone."""
        judge = self._pair_split[2]
        if judge is None:
            raise AlignkitError("the pairs have no judge split: it is carved out only when eval.judge is "
                                f"{JUDGE_SPLIT_JUDGE}")
        return judge

    @stage
    def reference_logps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """pi_ref's summed log-probs of every training pair's chosen and rejected completion [N], [N]:
        computed once per pairs and model, shared by every DPO-family run and sweep point (shipped for the
        default recipe)."""
        from safetensors.torch import load_file

        key = self.keys.reference_logps_key()
        self.artifact_keys["reference_logps"] = key

        def load(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
            tensors = load_file(str(path))
            return tensors["chosen"], tensors["rejected"]

        shipped = shipped_stage(REFERENCE_LOGPS, self.keys.reference_logps_made_by())
        if shipped is not None:
            return load(shipped / LOGPS_FILE)
        entry = self.cache_entry("reference_logps", key, ".safetensors")
        return entry.fetch(self.compute_reference_logps, load, self.runtime)

    def compute_reference_logps(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute pi_ref's log-probs of the training pairs and write them to ``path`` (safetensors)."""
        from safetensors.torch import save_file

        if isinstance(self.train_pairs, UnpairedData):  # one log-prob per example; no second column
            chosen = example_logprobs(self.reference_for(self.sft), self.train_pairs,
                                      self.recipe.preferences.append_eos, self.runtime)
            rejected = chosen.new_zeros(0)
        else:
            chosen, rejected = reference_logprobs(self.reference_for(self.sft), self.train_pairs,
                                                  self.recipe.preferences.append_eos, self.runtime)
        save_file({"chosen": chosen.contiguous(), "rejected": rejected.contiguous()}, str(path))
        return chosen, rejected

    def reference_samples(self, temperature: float) -> ReferenceSamples:
        """The reference (SFT) policy's samples on the evaluation prompts at ``temperature``, with their
        gold scores: drawn once per temperature and shared by every method compared against them."""
        key = self.keys.reference_samples_key(temperature)
        self.artifact_keys[f"reference_samples@{temperature:g}"] = key

        def build(path: Path) -> ReferenceSamples:
            cfg = self.recipe.eval
            reference, prompts = self.reference_for(self.sft).as_policy(), self.eval_prompts
            # after loading the SFT model, which reseeds: the same samples in any order of stages
            torch.manual_seed(self.seed + 1)
            rollout = reference.sample(
                prompts, max_new_tokens=cfg.max_new_tokens, temperature=temperature, top_p=cfg.top_p,
                batch_size=cfg.batch_size, progress=f"sampling reference (T={temperature:g})",
                runtime=self.runtime)
            # scored as the policy's samples are (evaluate_at): a reward model reads whether one ended
            gold = score_texts(self.gold, rollout.prompts, rollout.completions, rollout.ended)
            samples = ReferenceSamples(rollout.prompts, rollout.completions, rollout.ended, gold)
            write_jsonl(path, samples.records())
            return samples

        entry = self.cache_entry("reference_samples", key, ".jsonl")
        return entry.fetch(build, lambda path: ReferenceSamples.from_records(read_jsonl(path)), self.runtime)
