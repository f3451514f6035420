"""HPC batch runs on SLURM: site profiles, sbatch scripts that requeue themselves after a resumable stop
(exit 75), arrays, afterok chains and the status of a submitted graph. Nothing here runs physics: the
jobs call the ``mlff`` commands, which resume from their own checkpoints."""

from mlff.hpc.kinds import KINDS, PLANNED, Plan, plan
from mlff.hpc.profile import SiteProfile, load_profile
from mlff.hpc.script import TASK_ID, Job, Var, render_script
from mlff.hpc.status import format_status, job_status
from mlff.hpc.submit import scripts, submit_plan, write_plan

__all__ = ["KINDS", "PLANNED", "TASK_ID", "Job", "Plan", "SiteProfile", "Var", "format_status", "job_status",
           "load_profile", "plan", "render_script", "scripts", "submit_plan", "write_plan"]
