"""The application: fewstep's math library (`data, models, solvers, schedules, geometry, metrics`) run by Lightning
and configured by Hydra.

    config/     the composed config checked as a whole, then resolved into one frozen `RunPlan`
    tasks/      one function per `task=` (sample, search, train, train_features, analyze), reading the plan
    lightning_modules, runner   Lightning's prediction and training loops, rank-sharded; the search's runner
    outputs, shards, plots, reporting, loggers, sweep, dashboard   what a run and a sweep leave behind
    command, cli, runtime       `run.py` and the `fewstep` console script: errors as one line, signals, threads
"""
