"""The environment variables a rerun is described in: written by the command backend
(:mod:`lrdoctor.verify.backends`), read by :class:`lrdoctor.Controller` inside the user's script.
One list, so the two sides cannot drift apart."""

ENV_CONFIG = "LRDOCTOR_VERIFY_CONFIG"  # JSON: the arm's config patch, with max_steps and seed
ENV_LOGDIR = "LRDOCTOR_LOGDIR"
ENV_MAX_STEPS = "LRDOCTOR_MAX_STEPS"
ENV_SEED = "LRDOCTOR_SEED"
ENV_DEVICE = "LRDOCTOR_DEVICE"
ENV_ARM = "LRDOCTOR_ARM"  # "baseline" or "candidate"
ENV_BASE_LR = "LRDOCTOR_BASE_LR"  # the original run's LR, when known
ENV_LOGGED_PEAK_LR = "LRDOCTOR_LOGGED_PEAK_LR"  # the largest LR the original run logged, when it logged one
ENV_RESUME_FROM = "LRDOCTOR_RESUME_FROM"  # checkpoint to resume ("" or unset: start at step 0)
ENV_START_STEP = "LRDOCTOR_START_STEP"  # the checkpoint's step (0 when starting fresh)
ENV_BUDGET_STEPS = "LRDOCTOR_BUDGET_STEPS"  # steps to run after it (LRDOCTOR_MAX_STEPS is where to stop)
