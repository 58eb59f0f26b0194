"""Executors other than local processes (``sweep.py``): where a run's chains run.

The unit of work is one chain, which resumes from its own directory; so an executor only has to start
every unfinished chain somewhere that sees the run directory, and start it again if it is stopped.
Progress is read from the run directory (each chain's ``progress.json``), so it needs nothing from the
workers. Every executor gives the local executor's table, byte for byte: the numbers depend on keys,
not on where or in what order the chains run.

* ``ray_tasks.py`` (extra ``[ray]``): one Ray task per chain, rerun when its worker dies.
* ``slurm_jobs.py`` (extra ``[slurm]``): one Slurm job per chain, all in one job array, requeued at its
  time limit or when preempted; a data-parallel chain is one job of several tasks.

As with local processes, the first chain that fails stops the others (their commits stay, ``resume``
finishes them) and its error, in one line (``sweep.chain_error``; a bug's traceback: ``sweep.chain_crash``),
ends the run.
"""

# How often the driver reads the chains' progress from the run directory.
POLL_INTERVAL_S = 0.5
# How long chains stopped by Ctrl-C get to commit what they have computed before they are killed
# (local workers too).
STOP_GRACE_S = 10.0
