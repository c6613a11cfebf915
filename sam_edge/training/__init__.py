"""Training side shared by every trainer: the resumable engine (:mod:`training.engine`), DDP
plumbing (:mod:`training.ddp`) and run logs (:mod:`training.runlog`)."""
