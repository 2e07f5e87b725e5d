"""Ray Train for the jobs of one pipeline: phase 2 and each phase-3 target on `distributed.workers` workers.

Ray's guidance for Train inside Tune (Ray 2.60, Train V2): the Tune trial is only the driver (a small CPU
bundle); each job is a `TorchTrainer` whose workers request their own CPUs/GPUs, and whose run name is the
job's cache key, so a retried trial restores the same Train run. Workers run `trainables.jobs.run_job` and
checkpoint with torch.distributed.checkpoint on the job's schedule (`checkpoint.minutes`, or `checkpoint.steps`); a
failed worker group restarts from the last checkpoint (`ray.train.FailureConfig`). The Train run's folder
(`<cache_dir>/ray-train/<job>`) is removed once the job's cache entry is published (trainables.checkpoints.drop).

Without the dashboard (this project's minimal Ray), Ray cannot clean up the placement group of a Train run
whose Tune trial was killed; the workers therefore record it under `<registry>/<trial>-<pg>` and the
search's `RemoveTrainPlacementGroups` callback removes it when the trial ends or restarts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray import tune

from trainables.checkpoints import Scheduled
from trainables.config import CheckpointConfig as JobCheckpoints
from trainables.distributed import drop_superseded, load_sharded, save_sharded, worker
from trainables.errors import XstiltsError


class RayHooks(Scheduled):
    """Sharded checkpoints through `ray.train.report`, on the job's checkpoint schedule (trainables.checkpoints);
    restore from `ray.train.get_checkpoint()`. The best epoch so far goes to `side` once per change."""

    def __init__(self, ccfg: dict, side: str | None = None):
        super().__init__(JobCheckpoints(**ccfg))
        self.side = Path(side) if side else None
        self.written: dict = {}

    def restore(self, model, optimizer, scheduler) -> tuple[int, dict]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return 0, {}
        with checkpoint.as_directory() as folder:
            if not (Path(folder) / ".metadata").exists():
                return 0, {}
            return load_sharded(model, optimizer, scheduler, Path(folder), self.written)

    def save(self, model, optimizer, scheduler, step: int, extra: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:  # each rank writes its shard; Ray merges them into one folder
            save_sharded(model, optimizer, scheduler, step, Path(tmp), extra, self.side, self.written)
            ray.train.report({"step": step}, checkpoint=Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"step-{step:08d}")
        if self.side is not None:
            drop_superseded(self.side, self.written)


def _worker(config: dict):
    from trainables.jobs import run_job

    if worker().main and config.get("registry"):  # so the search can free it if the trial dies
        group = ray.util.get_current_placement_group()
        if group is not None:
            folder = Path(config["registry"])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{config['owner']}-{group.id.hex()}").touch()
    return run_job(config["job"], RayHooks(config["checkpoint"], config.get("side")))


def launcher(dcfg, storage: Path, cpu: float = 1.0, gpu: float = 0.0, max_failures: int = 2,
             owner: str | None = None, registry: Path | None = None):
    """A function running one job (`trainables.jobs`) on `dcfg.workers` Ray Train workers; returns rank 0's
    result. `storage`: shared storage for the Train runs (their checkpoints)."""
    def launch(job: dict):
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"job": job, "checkpoint": job["cfg"]["checkpoint"], "owner": owner,
                               "side": str(Path(storage).resolve() / job["key"] / "best"),
                               "registry": str(registry) if registry else None},
            torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=dcfg.workers, use_gpu=gpu > 0,
                                         resources_per_worker={"CPU": cpu, **({"GPU": gpu} if gpu else {})}),
            run_config=RunConfig(name=job["key"], storage_path=str(Path(storage).resolve()),
                                 failure_config=FailureConfig(max_failures=max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=1)))
        result = trainer.fit()
        if result.error:
            raise XstiltsError(f"{job['kind']} on {dcfg.workers} workers failed after {max_failures} retries: "
                               f"{str(result.error).splitlines()[0][:200]}")
        return result.return_value

    return launch


class RemoveTrainPlacementGroups(tune.Callback):
    """Free the placement groups of a trial's Train runs when the trial ends, fails or restarts."""

    def __init__(self, registry: Path):
        self.registry = Path(registry)

    def _free(self, trial) -> None:
        from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

        for marker in self.registry.glob(f"{trial.trial_id}-*"):
            group = PlacementGroup(ray.PlacementGroupID.from_hex(marker.name.split("-", 1)[1]))
            if placement_group_table(group).get("state") not in (None, "REMOVED"):
                remove_placement_group(group)
            marker.unlink(missing_ok=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._free(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._free(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._free(trial)
