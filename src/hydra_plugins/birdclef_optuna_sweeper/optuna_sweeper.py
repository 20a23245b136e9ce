"""Bayesian search with Optuna through Hydra's launcher: every trial is a normal Hydra job in its own dir.

    python scripts/train.py -m hparams_search=optuna
    python scripts/train.py -m hydra/sweeper=birdclef_optuna 'optimizer.lr=tag(log, interval(1e-4, 3e-3))'

The search space is written like Hydra sweeps (in hydra.sweeper.params or on the command line):
  interval(a, b)                   float in [a, b]
  tag(log, interval(a, b))         float, sampled on a log scale
  tag(int, interval(a, b))         integer in [a, b] (tags combine: tag(int, log, interval(1, 64)))
  a,b,c / choice(a, b) / range(..) one of these values (config groups too: loss=bce,auc)
  anything else                    a fixed override passed to every trial
The study lives in `storage` (SQLite in the sweep dir by default) under `study_name`: running the same
command again resumes it, and `n_trials` counts the trials finished by all invocations together.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

# No `from __future__ import annotations`: Hydra execs plugin modules before registering them in sys.modules,
# where dataclasses cannot resolve postponed annotations. Hence the quoted optuna types.
if TYPE_CHECKING:  # optuna is imported when a sweep starts, not when Hydra scans its plugins
    import optuna

log = logging.getLogger(__name__)


@dataclass
class BirdclefOptunaSweeperConf:
    _target_: str = "hydra_plugins.birdclef_optuna_sweeper.optuna_sweeper.BirdclefOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds the sampler itself, after reading the study (seed offset)
    direction: str = "maximize"  # or minimize; scripts/train.py returns the best validation macro AUC
    study_name: str = "birdclef"
    # any Optuna storage URL; relative SQLite paths are relative to the launch directory
    storage: str = "sqlite:///${hydra.sweep.dir}/optuna.db"
    n_trials: int = 20  # finished trials wanted in the study, counting earlier invocations
    n_jobs: int = 1  # trials per launcher batch (in parallel only with a parallel launcher, e.g. joblib)
    max_failure_rate: float = 0.0  # failed trials tolerated per batch before the sweep stops
    sampler: dict[str, Any] = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0})
    params: dict[str, str] = field(default_factory=dict)  # parameter -> search space (see the module doc)


ConfigStore.instance().store(group="hydra/sweeper", name="birdclef_optuna", node=BirdclefOptunaSweeperConf,
                             provider="birdclef")


def to_distribution(override: Override) -> "optuna.distributions.BaseDistribution | None":
    """The Optuna distribution of a sweep override; None for a plain value (a fixed parameter)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    if override.is_discrete_sweep():  # a,b,c / choice(...) / range(...)
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_interval_sweep():
        interval = override.value()
        log_scale = "log" in interval.tags
        if "int" in interval.tags:
            return IntDistribution(int(interval.start), int(interval.end), log=log_scale)
        return FloatDistribution(interval.start, interval.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space the birdclef_optuna sweeper understands")


def parse_search_space(arguments: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(distributions, fixed overrides) by parameter name; later arguments win (command line over yaml)."""
    distributions: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        distribution = to_distribution(override)
        if distribution is None:
            fixed[key] = override.get_value_element_as_str()
        else:
            distributions[key] = distribution
    return distributions, fixed


class BirdclefOptunaSweeper(Sweeper):
    """Ask Optuna for trials, run them as Hydra jobs, tell Optuna their return values."""

    def __init__(self, direction: str, study_name: str, storage: str, n_trials: int, n_jobs: int,
                 max_failure_rate: float, sampler: DictConfig, params: DictConfig) -> None:
        self.direction = direction
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.sampler = sampler
        self.params = params
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def load_study(self) -> "optuna.Study":
        import optuna

        if self.storage.startswith("sqlite:///"):  # SQLite creates the file, not its folder
            Path(self.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, direction=self.direction,
                                    load_if_exists=True)
        # Offset the sampler's seed by the trials already run: a resumed study would otherwise replay
        # the same random start-up points it tried before the interruption.
        sampler_cfg = OmegaConf.to_container(self.sampler)
        if sampler_cfg.get("seed") is not None:
            sampler_cfg["seed"] += len(study.trials)
        study.sampler = instantiate(sampler_cfg)
        return study

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        assert self.config is not None and self.launcher is not None
        distributions, fixed = parse_search_space([f"{k}={v}" for k, v in self.params.items()] + arguments)
        study = self.load_study()
        finished = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL
        to_go = self.n_trials - len(study.get_trials(deepcopy=False, states=finished))
        log.info("study %r in %s: %d trial(s) to go; searching %s", self.study_name, self.storage, max(to_go, 0),
                 ", ".join(distributions) or "nothing")
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, Path(self.config.hydra.sweep.dir) / "multirun.yaml")
        while to_go > 0:
            trials = [study.ask(distributions) for _ in range(min(self.n_jobs, to_go))]
            batch = [[f"{k}={v}" for k, v in {**trial.params, **fixed}.items()] for trial in trials]
            # job number = trial number: trial dirs never collide when a study resumes in the same sweep dir
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            self.tell(study, trials, returns)
            to_go -= len(trials)
        self.save_results(study)

    def tell(self, study: "optuna.Study", trials: "list[optuna.Trial]", returns: list[JobReturn]) -> None:
        """Record each job's return value (or its failure); re-raise when too many failed."""
        import optuna

        failures = 0
        for trial, job in zip(trials, returns):
            trial.set_user_attr("run_dir", job.hydra_cfg.hydra.runtime.output_dir if job.hydra_cfg else None)
            try:
                study.tell(trial, float(job.return_value))  # return_value re-raises the job's exception
            except Exception as error:  # a failed trial is recorded, the search goes on (max_failure_rate)
                log.warning("trial %d failed: %s", trial.number, error)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                failures += 1
        if failures / len(trials) > self.max_failure_rate:
            for job in returns:
                _ = job.return_value  # raises the first failure with its own traceback

    def save_results(self, study: "optuna.Study") -> None:
        """Log the best trial and write it to <sweep dir>/optimization_results.yaml."""
        best = study.best_trial
        results = {"name": "birdclef_optuna", "study_name": self.study_name, "storage": self.storage,
                   "n_trials": len(study.trials), "best_trial": best.number, "best_value": best.value,
                   "best_params": best.params, "best_run_dir": best.user_attrs.get("run_dir")}
        log.info("best trial %d: value %.4f with %s (%s)", best.number, best.value, best.params,
                 results["best_run_dir"])
        OmegaConf.save(OmegaConf.create(results), Path(self.config.hydra.sweep.dir) / "optimization_results.yaml")
