# Copyright (c) mmapt contributors. All rights reserved.
"""A checkpoint hook whose files survive a killed process, and whose
``--resume`` continues the run exactly.

mmengine 0.10's ``CheckpointHook`` (a) removes the oldest checkpoint *before*
writing the new one once ``max_keep_ckpts`` are kept, (b) writes the new file
in place (``open(path, 'wb')``) and (c) then rewrites ``last_checkpoint`` in
place. A process killed while (b) runs leaves a truncated ``iter_N.pth``, and
``last_checkpoint`` still names the checkpoint removed in (a): with
``max_keep_ckpts=1`` no loadable checkpoint is left at all. Its checkpoints
also hold no random-number-generator state: a resumed run re-seeds, so
RoI sampling, drop path and the like draw other numbers than the
uninterrupted run would have.

:class:`SafeCheckpointHook` is mmengine's hook with the same arguments and
files, except that for a local ``out_dir``:

* every checkpoint (periodic, last, best) is written to a hidden temporary
  file in the same directory, flushed to disk, then renamed over its name
  (``os.replace``, atomic on POSIX): a file named ``iter_N.pth`` is always
  complete;
* ``last_checkpoint`` is replaced the same way, and only after the file it
  names is in place;
* the checkpoint that falls out of ``max_keep_ckpts`` is removed only after
  that, so the newest complete checkpoint always exists;
* the Python, numpy, torch (and CUDA) generator states are saved under
  ``rng_state``, and restored when a run resumes from the checkpoint, right
  before its first iteration.

A save that fails (a full disk, an error while pickling) removes its
temporary file; those left by a killed save are removed when training
starts. A checkpoint loaded by the Runner (``load_from``, ``--resume``)
whose weights do not fit the model stops the run before anything is copied
(:mod:`mmapt.checkpoints.checkpoint_fit`), unless ``allow_partial_load=True``.
Remote ``out_dir`` backends keep mmengine's behaviour (their ``put`` is
already all-or-nothing).
"""
import os
import os.path as osp
import random
import re
from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np
import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmapt.checkpoints.atomic_file import (flush_to_disk, remove_temp_files,
                                           removed_on_failure,
                                           replace_atomically, temp_name)
from mmapt.checkpoints.checkpoint_fit import check_weight_fit
from mmapt.registry import HOOKS

# What the hook's switch for a partial load is called in a config.
PARTIAL_SWITCH = ('default_hooks.checkpoint.allow_partial_load=True (e.g. '
                  '--cfg-options default_hooks.checkpoint.'
                  'allow_partial_load=True)')


def rng_state() -> dict:
    """The generator states a training step may draw from."""
    state = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, host_generators: bool = True) -> None:
    """Restore :func:`rng_state`; ``host_generators=False`` leaves Python's
    and numpy's generators alone."""
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    if host_generators:
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with atomic writes, removal of old
    checkpoints after the new one is in place, and generator states for an
    exact resume (see the module docstring).

    Args:
        save_rng_state (bool): Save the generator states in every checkpoint
            and restore them on resume. Defaults to True.
        allow_partial_load (bool): Load a ``load_from`` / resumed checkpoint
            whose weights do not fit the model (other architecture, other
            shapes, under half of the tensors), as mmengine does, instead of
            stopping. Defaults to False.
        *args, **kwargs: ``mmengine.hooks.CheckpointHook`` arguments.

    Note:
        Python's and numpy's generators are restored only when the train
        dataloader has worker processes (the configs' default): with
        ``num_workers=0`` the main process draws the data augmentation from
        them, and mmengine's resume replays the skipped batches, which
        already brings them to the right state. In distributed runs the
        checkpoint holds rank 0's states only, so nothing is restored there
        (mmengine's re-seeding).
    """

    def __init__(self,
                 *args,
                 save_rng_state: bool = True,
                 allow_partial_load: bool = False,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.save_rng_state = save_rng_state
        self.allow_partial_load = allow_partial_load
        self._resumed_rng: Optional[dict] = None
        self._resumed_iter: Optional[int] = None

    def _local(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    # ---------------------------------------------------------- writing
    @contextmanager
    def _atomic_saves(self, runner) -> Iterator[None]:
        """Inside the block, ``runner.save_checkpoint`` writes a temporary
        file and renames it over the checkpoint's name."""
        if not self._local():
            yield
            return
        save = runner.save_checkpoint

        def save_atomically(out_dir, filename, *args, **kwargs):
            path = osp.join(out_dir, filename)
            tmp = temp_name(path)
            # A failed save (full disk, an error while pickling) leaves
            # no partial file behind to fill the disk further.
            with removed_on_failure(tmp):
                save(out_dir, osp.relpath(tmp, out_dir), *args, **kwargs)
                if is_main_process():  # save_checkpoint writes on rank 0
                    flush_to_disk(tmp)
                    os.replace(tmp, path)

        # Blocks may nest (a best checkpoint saved through a periodic save):
        # restore exactly what was there, the Runner's method at the end.
        own = vars(runner)
        had_own = 'save_checkpoint' in own
        previous = own.get('save_checkpoint')
        runner.save_checkpoint = save_atomically
        try:
            yield
        finally:
            if had_own:
                runner.save_checkpoint = previous
            else:
                own.pop('save_checkpoint', None)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        # The kept ids are recorded before saving (the checkpoint's message
        # hub holds them, as mmengine's do); the dropped file goes last.
        dropped = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        with self._atomic_saves(runner):
            runner.save_checkpoint(
                self.out_dir,
                filename,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
        if not is_main_process():
            return
        replace_atomically(
            osp.join(runner.work_dir, 'last_checkpoint'),
            self.last_ckpt.encode())
        if dropped is not None:
            old = osp.join(self.out_dir, self.filename_tmpl.format(dropped))
            if osp.isfile(old):
                os.remove(old)
            elif osp.isdir(old):
                self.file_backend.rmtree(old)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine removes the previous best file before writing the new
        # one; the new one, at least, is never torn.
        with self._atomic_saves(runner):
            super()._save_best_checkpoint(runner, metrics)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._local() and is_main_process():
            remove_temp_files(self.out_dir)  # from a killed save

    # ------------------------------------------------- generator states
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.save_rng_state:
            checkpoint['rng_state'] = rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Called after the Runner read the file, before it copies weights.
        if not self.allow_partial_load:
            self._check_fit(runner, checkpoint)
        # Also called for load_from: restored only if the run continues at
        # the checkpoint's iteration (a resume), in before_train_iter.
        self._resumed_rng = checkpoint.get('rng_state')
        self._resumed_iter = checkpoint.get('meta', {}).get('iter')

    @staticmethod
    def _check_fit(runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        state = checkpoint.get('state_dict', checkpoint)
        # The Runner's default revise_keys strip a DataParallel prefix.
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
        # A test-time-augmentation model holds the detector as ``module``.
        shapes = {
            re.sub(r'^module\.', '', k): v.shape
            for k, v in model.state_dict().items()
        }
        path = getattr(runner, '_load_from', None)
        source = f'checkpoint {path}' if path else 'the resumed checkpoint'
        check_weight_fit(shapes, state, source, PARTIAL_SWITCH)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        # The last hook before the step (priority VERY_LOW), after the
        # resumed loop skipped the batches already trained on.
        state, self._resumed_rng = self._resumed_rng, None
        if state is None or not self.save_rng_state or \
                runner.iter != self._resumed_iter or runner.iter == 0:
            return
        if get_world_size() > 1:
            print_log(
                'SafeCheckpointHook: generator states are not restored in '
                'distributed runs (the checkpoint holds rank 0\'s only)',
                logger='current')
            return
        loader = runner.train_dataloader
        set_rng_state(
            state, host_generators=getattr(loader, 'num_workers', 0) > 0)
