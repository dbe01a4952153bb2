"""Curves and training time from the runner's JSON logs (what
``tools/analysis/analyze_logs.py`` draws and prints).

mmengine's ``LocalVisBackend`` writes one JSON object per logged step to
``WORK_DIR/<timestamp>/vis_data/scalars.json``: training records carry
``lr``, the losses, ``time`` and, with ``TokenStatsHook``, ``tokens`` /
``keep_ratio``; validation records carry the metrics and the validation
``keep_ratio``. A key is looked up in the training records first, then in
the validation records; ``val/KEY`` asks for the validation records only.
"""
import glob
import json
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence

VAL_PREFIX = 'val/'


class LogError(Exception):
    """A log that cannot be read, or a key it does not have."""


def find_log(path: str) -> str:
    """The JSON log of ``path``: the file itself, or the newest run's
    ``vis_data/scalars.json`` below a work dir."""
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise LogError(f'{path}: no such file or work dir')
    found = sorted(
        glob.glob(
            osp.join(path, '**', 'vis_data', 'scalars.json'), recursive=True),
        key=osp.getmtime)
    if not found:
        raise LogError(f'{path}: no vis_data/scalars.json below it; pass the '
                       'JSON log written by training (LocalVisBackend)')
    return found[-1]


def load_log(path: str) -> Dict[str, List[dict]]:
    """The training and validation records of one JSON log, in order.

    Training records are the ones with a learning rate (``lr``), as
    mmengine's LogProcessor writes them; every other record is a
    validation (or test) one.
    """
    records: Dict[str, List[dict]] = dict(train=[], val=[])
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise LogError(f'{path}:{number}: not a JSON line ({error})')
            if not isinstance(record, dict) or 'step' not in record:
                raise LogError(f'{path}:{number}: not a runner log record '
                               '(no "step")')
            records['train' if 'lr' in record else 'val'].append(record)
    if not records['train'] and not records['val']:
        raise LogError(f'{path}: empty log')
    return records


def available_keys(records: Dict[str, List[dict]]) -> Dict[str, List[str]]:
    skip = {'step', 'iter', 'epoch'}
    return {
        mode: sorted({k
                      for r in rows
                      for k in r if k not in skip})
        for mode, rows in records.items()
    }


def curve(records: Dict[str, List[dict]], key: str, log: str):
    """(steps, values) of ``key``: from the training records when they have
    it, else from the validation ones; ``val/KEY`` reads the validation
    records only."""
    if key.startswith(VAL_PREFIX):
        modes, name = ('val', ), key[len(VAL_PREFIX):]
    else:
        modes, name = ('train', 'val'), key
    for mode in modes:
        rows = [r for r in records[mode] if name in r]
        if rows:
            return [r['step'] for r in rows], [float(r[name]) for r in rows]
    keys = available_keys(records)
    raise LogError(f'key {key!r} is not in {log}; available keys: training: '
                   f'{", ".join(keys["train"]) or "none"}; validation: '
                   f'{", ".join(keys["val"]) or "none"} (prefix a validation '
                   f'key with {VAL_PREFIX!r} to skip the training records)')


def plot_curve(logs: Sequence[str],
               keys: Sequence[str],
               out: str,
               legend: Optional[Sequence[str]] = None,
               title: Optional[str] = None) -> str:
    """One panel per key, every log overlaid; saved as ``out`` (PNG)."""
    if legend is not None and len(legend) != len(logs):
        raise LogError(f'--legend needs one name per log: {len(logs)} logs, '
                       f'{len(legend)} names')
    paths = [find_log(log) for log in logs]
    records = [load_log(p) for p in paths]
    # Every key of every log is checked before anything is drawn.
    curves = [[curve(r, key, p) for key in keys]
              for r, p in zip(records, paths)]
    names = list(legend) if legend else [_short_name(p) for p in paths]

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(
        len(keys), 1, figsize=(7, 2.6 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        ax = axes[row][0]
        for name, log_curves in zip(names, curves):
            steps, values = log_curves[row]
            ax.plot(
                steps,
                values,
                marker='.' if len(steps) < 30 else None,
                label=name)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(logs) > 1:
            ax.legend(fontsize='small')
    axes[-1][0].set_xlabel('iteration')
    if title:
        axes[0][0].set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def train_time(path: str, include_outliers: bool = False) -> dict:
    """Time per iteration from the training records (``time``: the mean
    over the logging window). The first record (start-up, first batches)
    is left out unless ``include_outliers``."""
    rows = [r for r in load_log(path)['train'] if 'time' in r]
    if not rows:
        raise LogError(f'{path}: no training record with "time"')
    if not include_outliers and len(rows) > 1:
        rows = rows[1:]
    times = [float(r['time']) for r in rows]
    slowest = max(rows, key=lambda r: r['time'])
    fastest = min(rows, key=lambda r: r['time'])
    last_step = max(r['step'] for r in rows)
    mean = statistics.fmean(times)
    return dict(
        log=path,
        records=len(rows),
        last_iter=last_step,
        mean_s=mean,
        std_s=statistics.pstdev(times),
        slowest_iter=slowest['step'],
        slowest_s=float(slowest['time']),
        fastest_iter=fastest['step'],
        fastest_s=float(fastest['time']),
        data_mean_s=statistics.fmean(
            float(r.get('data_time', 0.0)) for r in rows),
        est_total_s=mean * last_step)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f'{seconds:.0f} s'
    if seconds < 7200:
        return f'{seconds / 60:.1f} min'
    return f'{seconds / 3600:.1f} h'


def _short_name(path: str) -> str:
    """work_dirs/NAME/<timestamp>/vis_data/scalars.json -> NAME."""
    parts = osp.normpath(path).split(osp.sep)
    if len(parts) >= 4 and parts[-2] == 'vis_data':
        return parts[-4]
    return osp.basename(path)
