"""GAN RL Lab's engine: PyTorch only, never Streamlit. A map of its rooms, one per part
of the lab, roughly from the ground floor up. Modules import each other without any
loop (tests/test_contracts.py builds the import graph and fails on a cycle); base/ and
data/ import nothing else of core.

    base/      registry.py (the registries' contract checks), validate.py (ConfigError,
               range and choice checks), options.py (option(), Options: validated from
               their metadata), files.py (atomic writes)
    data/      datasets.py: the DATASETS registry (loader, shape, is_2d, preset) and
               the loaders: embedded MNIST, torchvision, image folders, 2-D mixtures;
               points.py (the user's own 2-D points: CSV checks, scaling)
    quality/   metrics.py (each q_* metric registered with its compute function),
               classifier.py (the image judge), coverage.py (k-NN precision and
               coverage of 2-D points without modes), then evaluate.py (the Evaluator, the
               run's quality hook), offline.py (score a checkpoint), paired.py
    feedback/  preferences.py (the judgement store), oracles.py, reward_model.py,
               loop.py (simulated feedback, training from the store, the blind test)
    engine/    metric_info.py (METRICS), rewards.py (REWARDS), rules/ (RULES: bce,
               reinforce, rlhf), config.py (TrainConfig, presets), models.py, step.py,
               samples.py, metric_log.py, run.py, trainer.py, arena.py
    io/        format.py (safetensors + checksum), checkpoint.py (save, load),
               schema.py (validate a loaded checkpoint), saved_points.py (the
               user's points a checkpoint carries),
               animate.py (snapshots -> GIF)
    jobs/      arena_task.py (one seed of one config, as bytes), backends.py (serial,
               local pool, Ray), multi_seed.py, sweep.py, seed_job.py (for the UI)
    cli/       main.py (`python -m core`: the parser, one-line errors), args.py (what
               the commands share), train.py, checkpoints.py (sample, eval, extract,
               animate, info), compare.py (compare, sweep), feedback.py (feedback,
               reward), checks.py (argument checks), report.py

The life of one training step (Trainer.step -> Run.step -> step.train_step):
    1. BatchStream draws d_steps real batches and their z (one seeded stream per run).
    2. For each: G's forward, the rule's emit() (what D sees as fake), one BCE step of D
       (skipped when rule.trains_d(options) says no).
    3. The rule's gradient for G: its hand-written fast_grad, or its autograd loss();
       its metrics must include g_loss and reward_mean (checked on the first step).
    4. The shared gradient clip, one fused Adam step (skipped on a non-finite gradient),
       the EMA of G; all metrics read in one host sync into the MetricLog.
    5. Every sample_every steps a fixed-z snapshot; every eval_every steps the quality
       hook scores G with every metric registered for the data's kind, plus the rule's
       own quality() metrics.
"""
